"""Start the web app under real gunicorn (as the Procfile does) on a free port, for tests.

    def test_x(start_web):
        url = start_web(AUTH_DISABLED="true", ACS_STREAMING_MODE="MEDIA")

Each process is stopped after the test. ``threads`` sets gunicorn's thread count (a media call
holds one thread for its socket).
"""

from __future__ import annotations

from pathlib import Path

import httpx

from settings.redis_server import free_port
from tests.support.processes import ManagedProcess, python_args


class WebStarter:
    def __init__(self, base_env: dict[str, str], work_dir: Path) -> None:
        self.base_env, self.work_dir = base_env, work_dir
        self.started: list[ManagedProcess] = []

    def __call__(self, threads: int | None = None, **env: str) -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process_env = {**self.base_env, "WEB_PORT": str(port), **env}
        if threads is not None:
            # Command-line settings win over web/gunicorn_conf.py's.
            process_env["GUNICORN_CMD_ARGS"] = f"--threads {threads}"
        process = ManagedProcess(
            python_args("-m", "gunicorn", "-c", "python:web.gunicorn_conf", "web.app:create_app()"),
            process_env,
            self.work_dir / f"web-{port}.log",
            ready=lambda: httpx.get(f"{url}/health", timeout=1).status_code == 200,
            name="gunicorn web",
        )
        self.started.append(process.start())
        return url

    def close(self) -> None:
        for process in self.started:
            process.stop()
        self.started.clear()
