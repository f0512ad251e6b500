"""The older common library's module and class names, delegating to the real code (migration)."""
