"""Every ``>>>`` example in Conduit's docstrings runs and shows what it says it shows.

The modules are found by their text, so an example added anywhere is run without a list to
update. An example that needs a server Conduit does not start for it (an Azure endpoint, a
worker) is not written with ``>>>`` but as a plain code block (``::``), saying what it needs.
"""

from __future__ import annotations

import doctest
import importlib
import re
import tomllib

import pytest

from tests.support.processes import REPO_ROOT

EXAMPLE = re.compile(r"^\s*>>> ", re.MULTILINE)
# Conduit's packages, as the layering contract names them, and the tests' own helpers.
PACKAGES = [
    *tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "root_packages"
    ],
    "tests.support",
]
# Examples in files another branch owns, to be made runnable or plain code there; strict, so
# the entry fails the run once they pass and can be deleted.
NOT_YET: dict[str, str] = {}


def modules_with_examples() -> list[str]:
    modules = []
    for package in PACKAGES:
        folder = REPO_ROOT.joinpath(*package.split("."))
        for path in sorted(folder.rglob("*.py")):
            if EXAMPLE.search(path.read_text(encoding="utf-8")):
                parts = path.relative_to(REPO_ROOT).with_suffix("").parts
                modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def test_the_examples_are_found() -> None:
    assert {"settings.jsonsafe", "settings.config", "tests.support.waiting"} <= set(
        modules_with_examples()
    )


@pytest.mark.parametrize(
    "module",
    [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=NOT_YET[name]))
        if name in NOT_YET
        else name
        for name in modules_with_examples()
    ],
)
def test_the_examples_in_a_module_run(module: str) -> None:
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for test in doctest.DocTestFinder().find(importlib.import_module(module)):
        runner.run(test, out=report.append)
    assert runner.tries > 0, f"{module} has a '>>>' line that is not in a docstring"
    assert runner.failures == 0, "".join(report)
