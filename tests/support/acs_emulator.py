"""Start the ACS emulator for tests: a real ``python -m emulators.acs`` on a free port, over HTTPS.

    def test_something(start_acs_emulator):
        acs = start_acs_emulator(ACS_EMULATOR_TARGET_URL=f"{web}/api/v1/calls/incoming")
        client = acs.call_automation_client()        # the real SDK, trusting the emulator's cert
        call = acs.place_call(question="what is the weather today")
        acs.wait_for_call(call["call_id"], lambda c: c["state"] == "disconnected")

``client_env()`` points a Conduit process at it (connection string, CA bundle, audience).
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from azure.communication.callautomation import CallAutomationClient

from settings.calls import ACS_EMULATOR_DEV_KEY, ACS_EMULATOR_RESOURCE_ID
from settings.redis_server import free_port
from tests.support.processes import ManagedProcess, python_args

# A whole emulated call takes tens of seconds of real time on a loaded machine.
CALL_TIMEOUT_SECS = 120.0
HTTP_TIMEOUT_SECS = 30.0


@dataclass
class RunningAcsEmulator:
    url: str
    port: int
    directory: Path
    access_key: str
    process: ManagedProcess

    @property
    def ca_file(self) -> str:
        return str(self.directory / "tls-cert.pem")

    @property
    def connection_string(self) -> str:
        return f"endpoint={self.url}/;accesskey={self.access_key}"

    def call_automation_client(self, **options: Any) -> CallAutomationClient:
        return CallAutomationClient.from_connection_string(
            self.connection_string, connection_verify=self.ca_file, **options
        )

    def client_env(self) -> dict[str, str]:
        """Environment that points a Conduit process at this emulator."""
        return {
            "ACS_EMULATOR_HOST": "127.0.0.1",
            "ACS_EMULATOR_PORT": str(self.port),
            "ACS_EMULATOR_DIR": str(self.directory),
            "ACS_CA_BUNDLE": self.ca_file,
            "ACS_RESOURCE_ID": ACS_EMULATOR_RESOURCE_ID,
            "ACS_JWKS_URL": f"{self.url}/calling/keys",
        }

    def http(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method,
            self.url + path,
            verify=ssl.create_default_context(cafile=self.ca_file),
            timeout=HTTP_TIMEOUT_SECS,
            **kwargs,
        )

    def place_call(self, **body: Any) -> dict[str, Any]:
        response = self.http("POST", "/_emulator/acs/calls", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def call(self, call_id: str) -> dict[str, Any]:
        response = self.http("GET", f"/_emulator/acs/calls/{call_id}")
        response.raise_for_status()
        return response.json()

    def wait_for_call(
        self,
        call_id: str,
        condition: Callable[[dict[str, Any]], bool],
        timeout: float = CALL_TIMEOUT_SECS,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            call = self.call(call_id)
            if condition(call):
                return call
            if time.monotonic() > deadline:
                raise TimeoutError(f"call {call_id} never reached the condition: {call}")
            time.sleep(0.1)


class AcsEmulatorStarter:
    """Starts ACS emulators on free ports and stops every one of them on ``close``."""

    def __init__(self, work_dir: Path, base_env: dict[str, str]) -> None:
        self.work_dir, self.base_env = work_dir, base_env
        self.started: list[ManagedProcess] = []

    def __call__(self, **env: str) -> RunningAcsEmulator:
        port = free_port()
        directory = self.work_dir / f"acs-{port}"
        process_env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            **self.base_env,
            "ACS_EMULATOR_HOST": "127.0.0.1",
            "ACS_EMULATOR_PORT": str(port),
            "ACS_EMULATOR_DIR": str(directory),
            **env,
        }
        url = f"https://127.0.0.1:{port}"

        def ready() -> bool:
            cert = directory / "tls-cert.pem"
            trust = ssl.create_default_context(cafile=str(cert))
            response = httpx.get(f"{url}/_emulator/acs/health", verify=trust, timeout=1.0)
            return response.status_code == 200

        process = ManagedProcess(
            python_args("-m", "emulators.acs"),
            process_env,
            self.work_dir / f"acs-emulator-{port}.log",
            ready=ready,
            name=f"ACS emulator on port {port}",
        )
        self.started.append(process)
        process.start()
        return RunningAcsEmulator(url, port, directory, ACS_EMULATOR_DEV_KEY, process)

    def close(self) -> None:
        for process in self.started:
            process.stop()
        self.started.clear()
