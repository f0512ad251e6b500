"""``python -m stack.flower``: Flower for the Celery workers, with basic auth from settings.

Credentials travel in the environment (Flower reads FLOWER_BASIC_AUTH itself), not on the
command line, where any local user could read them with ``ps``. Without credentials Flower starts
only when AUTH_DISABLED is set (``make run``), and says so.
"""

from __future__ import annotations

import os
import sys

from settings import configure_logging, get_logger, settings_or_exit


def main() -> None:
    settings = settings_or_exit("flower")
    configure_logging(settings)
    env = dict(os.environ)
    if settings.flower_basic_auth:
        env["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth.get_secret_value()
    elif settings.auth_disabled:
        get_logger("stack.flower").warning("Flower runs without a password (AUTH_DISABLED).")
    else:
        sys.exit("Flower needs FLOWER_BASIC_AUTH=user:password (or AUTH_DISABLED=true for dev).")
    env.setdefault("FLOWER_ADDRESS", "127.0.0.1")
    env["FLOWER_PORT"] = str(settings.flower_port)
    args = [sys.executable, "-m", "celery", "-A", "worker", "flower"]
    os.execve(sys.executable, args, env)


if __name__ == "__main__":
    main()
