"""Console scripts for the processes whose command is another tool's CLI (celery, gunicorn).

``pip install`` of this project (``make .venv`` installs it editable) puts ``conduit-worker`` and
``conduit-web`` on the PATH beside ``conduit-bridge``, ``conduit-emulators`` and the rest (see
``[project.scripts]`` in pyproject.toml). Each runs the Procfile line of the same name (a test
keeps the two equal), with any extra arguments appended:

    conduit-worker -c 2  # celery -A worker worker --loglevel INFO -c 2
    conduit-web        # gunicorn -c python:web.gunicorn_conf 'web.app:create_app()'
"""

from __future__ import annotations

import shlex
import sys

from celery.__main__ import main as celery_main
from gunicorn.app.wsgiapp import run as gunicorn_run

COMMANDS = {
    "worker": "celery -A worker worker --loglevel INFO",
    "web": "gunicorn -c python:web.gunicorn_conf 'web.app:create_app()'",
}


def worker() -> None:
    """``conduit-worker``: a Celery worker for Conduit's queues."""
    sys.argv = [*shlex.split(COMMANDS["worker"]), *sys.argv[1:]]
    celery_main()


def web() -> None:
    """``conduit-web``: the web app under gunicorn."""
    sys.argv = [*shlex.split(COMMANDS["web"]), *sys.argv[1:]]
    gunicorn_run()
