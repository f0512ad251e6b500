"""Conduit's web app under real gunicorn, wired to an ACS emulator and the OpenAI emulator, for the
call-control tests (``start_calls_web`` in tests/conftest.py)::

    def test_x(start_calls_web, calls_acs):
        url, process = start_calls_web(CALLS_DENIED_CALLERS="+15550666")
        calls_acs.place_call(question="...", target_url=f"{url}/api/v1/calls/incoming",
                             target_api_key=CALLS_API_KEY)

The app runs with auth on (``CALLS_API_KEY`` for our endpoints, ACS's JWTs from the emulator for
callbacks and the media socket) and local speech engines. ``port`` restarts a process on the port
an earlier one had (a web restart).
"""

from __future__ import annotations

from pathlib import Path

import httpx

from settings.redis_server import free_port
from tests.support.acs_emulator import RunningAcsEmulator
from tests.support.emulator import RunningEmulator
from tests.support.processes import REPO_ROOT, ManagedProcess, python_args

CALLS_API_KEY = "calls-test-key"
# The agent's recogniser decodes against the phrases the tests speak (exact on espeak speech).
PHRASES_FILE = str(REPO_ROOT / "emulators" / "phrases.txt")


class CallsWebStarter:
    def __init__(
        self,
        base_env: dict[str, str],
        work_dir: Path,
        acs: RunningAcsEmulator,
        llm: RunningEmulator,
    ) -> None:
        self.base_env, self.work_dir, self.acs, self.llm = base_env, work_dir, acs, llm
        self.started: list[ManagedProcess] = []

    def env(self, url: str, port: int) -> dict[str, str]:
        return {
            **self.base_env,
            **self.llm.client_env(),
            **self.acs.client_env(),
            # PyJWT fetches the emulator's JWKS with the default trust store.
            "SSL_CERT_FILE": self.acs.ca_file,
            "AUTH_API_KEY": CALLS_API_KEY,
            "CALLS_PUBLIC_BASE_URL": url,
            "LOCAL_STT_PHRASES_FILE": PHRASES_FILE,
            "STT_POOL_SIZE": "2",
            "WEB_PORT": str(port),
        }

    def __call__(self, port: int | None = None, **env: str) -> tuple[str, ManagedProcess]:
        port = port or free_port()
        url = f"http://127.0.0.1:{port}"
        process = ManagedProcess(
            python_args("-m", "gunicorn", "-c", "python:web.gunicorn_conf", "web.app:create_app()"),
            {**self.env(url, port), **env},
            self.work_dir / f"web-{port}-{len(self.started)}.log",
            ready=lambda: httpx.get(f"{url}/health", timeout=1).status_code == 200,
            name="gunicorn web",
        )
        self.started.append(process.start())
        return url, process

    def close(self) -> None:
        for process in self.started:
            process.stop()
        self.started.clear()
