"""Start the Azure OpenAI emulator for tests: a real ``python -m emulators`` on a free port.

Through the ``start_emulator`` fixture (tests/conftest.py)::

    def test_something(start_emulator):
        emulator = start_emulator(limits={"gpt-4o": {"tpm": 1000, "rpm": 60}},
                                  EMULATOR_WINDOW_SECONDS="6")
        client = emulator.azure_client()
        worker_env = {**conduit_env, **emulator.client_env()}   # for a Conduit subprocess

``limits`` becomes the EMULATOR_LIMITS_FILE (unset: the Settings quotas of gpt-4o,
text-embedding-3-large and whisper); other keyword arguments are environment variables.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from openai import AzureOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessageParam

from settings import EMULATOR_DEV_KEY
from settings.redis_server import free_port
from settings.search import SEARCH_EMULATOR_PATH
from tests.support.processes import ManagedProcess, python_args

T = TypeVar("T")


def present(value: T | None, what: str) -> T:
    """``value``, which the request made sure the answer has (the SDK types it optional)."""
    assert value is not None, f"the answer has no {what}"
    return value


def ask(text: str) -> list[ChatCompletionMessageParam]:
    """One user message, as a chat request's ``messages``."""
    return [{"role": "user", "content": text}]


API_VERSION = "2024-10-21"
# Generous: a loaded CI machine may take seconds over an answer, and a test should fail on an
# assertion, not a timeout.
CLIENT_TIMEOUT_SECS = 30.0


# The emulator charges a request when its handler runs: on this 2-core box under a full
# test run that is up to ~0.6 s after the request left (bench.quota_utilization's
# stamp_to_charge_ms, p99 at load 5), more than the 0.5 s default margin is for (Azure's
# network time). Tests that count upstream 429s give the margin that slack; what the default
# margin achieves is measured by the benchmark, not asserted on a loaded CI machine.
LOADED_MARGIN_ENV = {"QUOTA_UPSTREAM_MARGIN_SECONDS": "1"}


@dataclass
class RunningEmulator:
    url: str
    port: int
    api_key: str
    process: ManagedProcess

    def azure_client(self, **options: Any) -> AzureOpenAI:
        """The SDK's Azure client; retries off unless asked, so a test sees every status."""
        options = {
            "max_retries": 0,
            "timeout": CLIENT_TIMEOUT_SECS,
            "api_key": self.api_key,
            **options,
        }
        return AzureOpenAI(azure_endpoint=self.url, api_version=API_VERSION, **options)

    def openai_client(self, **options: Any) -> OpenAI:
        options = {
            "max_retries": 0,
            "timeout": CLIENT_TIMEOUT_SECS,
            "api_key": self.api_key,
            **options,
        }
        return OpenAI(base_url=f"{self.url}/v1", **options)

    @property
    def search_endpoint(self) -> str:
        """The Azure AI Search endpoint the emulator serves (give it to the SDK's clients)."""
        return f"{self.url}{SEARCH_EMULATOR_PATH}"

    def client_env(self) -> dict[str, str]:
        """Environment that points a Conduit process (tasks/, web/) at this emulator."""
        return {
            "EMULATOR_HOST": "127.0.0.1",
            "EMULATOR_PORT": str(self.port),
            "EMULATOR_API_KEY": self.api_key,
        }

    def configure(self, **controls: Any) -> dict[str, Any]:
        """Change latency and faults (POST /_emulator/config); returns the new settings."""
        return self._control("POST", "/_emulator/config", json=controls)

    def stats(self) -> dict[str, Any]:
        return self._control("GET", "/_emulator/stats")

    def reset(self) -> None:
        """Zero the counters and empty the rate-limit windows."""
        self._control("POST", "/_emulator/reset")

    def _control(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = httpx.request(
            method,
            self.url + path,
            headers={"api-key": self.api_key},
            timeout=CLIENT_TIMEOUT_SECS,
            **kwargs,
        )
        response.raise_for_status()
        return response.json()


class EmulatorStarter:
    """Starts emulators on free ports and stops every one of them on ``close``."""

    def __init__(self, work_dir: Path, base_env: dict[str, str]) -> None:
        self.work_dir, self.base_env = work_dir, base_env
        self.started: list[ManagedProcess] = []

    def __call__(
        self, limits: dict[str, dict[str, int]] | None = None, **env: str
    ) -> RunningEmulator:
        port = free_port()
        process_env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            **self.base_env,
            "EMULATOR_HOST": "127.0.0.1",
            "EMULATOR_PORT": str(port),
            # Search indexes on disk: in the test's directory, never the repository's .data/.
            "EMULATOR_SEARCH_DATA_DIR": str(self.work_dir / f"search-{port}"),
            **env,
        }
        if limits is not None:
            limits_file = self.work_dir / f"emulator-limits-{port}.json"
            limits_file.write_text(json.dumps(limits))
            process_env["EMULATOR_LIMITS_FILE"] = str(limits_file)
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            return httpx.get(f"{url}/health", timeout=1.0).status_code == 200

        process = ManagedProcess(
            python_args("-m", "emulators"),
            process_env,
            self.work_dir / f"emulator-{port}.log",
            ready=ready,
            name=f"emulator on port {port}",
        )
        self.started.append(process)
        process.start()
        api_key = process_env.get("EMULATOR_API_KEY") or EMULATOR_DEV_KEY
        return RunningEmulator(url=url, port=port, api_key=api_key, process=process)

    def close(self) -> None:
        for process in self.started:
            process.stop()
        self.started.clear()
