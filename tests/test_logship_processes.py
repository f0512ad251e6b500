"""Log shipping inside Conduit's real processes: gunicorn workers sharing one LOG_DIR upload each
file once; a Celery worker ships while it runs and makes a final scan as it stops. (The bridge's
hook is tested in test_logship_monitor.py.)"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from azure.storage.blob import BlobServiceClient

from settings.redis_server import free_port
from tests.support.azurite import AzuriteServer
from tests.support.processes import ManagedProcess, python_args

HOST = "host-1"
WAIT_SECS = 120


def rotated(logs: Path, app: str, days_ago: int) -> Path:
    day = (dt.date.today() - dt.timedelta(days=days_ago)).isoformat()
    path = logs / f"{app}.{day}.log"
    path.write_text(f'{{"message": "{app}, {days_ago} days ago"}}\n' * 20)
    return path


def blob_names(connection: str, container: str) -> set[str]:
    with BlobServiceClient.from_connection_string(connection) as service:
        client = service.get_container_client(container)
        return {b.name for b in client.list_blobs()} if client.exists() else set()


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECS
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def shipping_env(azurite: AzuriteServer, logs: Path, app: str, container: str) -> dict[str, str]:
    return {
        "APP_NAME": app,
        "LOG_DIR": str(logs),
        "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
        "LOG_SHIPPING_CONTAINER": container,
        "LOG_SHIPPING_HOST_NAME": HOST,
        "LOG_SHIPPING_SCAN_INTERVAL_SECONDS": "0.3",
    }


@pytest.mark.slow
def test_gunicorn_workers_sharing_a_log_dir_upload_each_file_once(
    azurite_server: AzuriteServer, conduit_env: dict[str, str], tmp_path: Path
):
    logs, container = tmp_path / "logs", f"logs-{uuid.uuid4().hex[:10]}"
    logs.mkdir()
    files = [rotated(logs, "web", days) for days in range(1, 16)]
    port = free_port()
    env = {
        **conduit_env,
        **shipping_env(azurite_server, logs, "web", container),
        "WEB_PORT": str(port),
        "WEB_CONCURRENCY": "3",  # three worker processes, three monitors, one directory
        "AUTH_DISABLED": "true",
    }
    web = ManagedProcess(
        python_args("-m", "gunicorn", "-c", "python:web.gunicorn_conf", "web.app:create_app()"),
        env,
        tmp_path / "web.log",
        ready=lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200,
        name="gunicorn web",
    ).start()
    try:
        expected = {f"web/{HOST}/{f.name}" for f in files}
        wait_for(lambda: blob_names(azurite_server.connection_string, container) == expected, "")
    finally:
        web.stop()

    writes = azurite_server.committed_writes()
    assert {name: writes[f"{container}/{name}"] for name in expected} == dict.fromkeys(expected, 1)
    # The claims kept the workers apart: each file was uploaded by one of them, and none found
    # another's upload already there (which the MD5 check would have caught, one layer lower).
    output = web.output()
    assert sum(f"uploaded to {container}/" in line for line in output.splitlines()) == 15
    assert "was already at" not in output


@pytest.mark.slow
def test_a_celery_worker_ships_while_running_and_once_more_as_it_stops(
    azurite_server: AzuriteServer, start_worker, tmp_path: Path
):
    logs, container = tmp_path / "logs", f"logs-{uuid.uuid4().hex[:10]}"
    logs.mkdir()
    first = rotated(logs, "worker", 2)
    env = shipping_env(azurite_server, logs, "worker", container)
    env["LOG_SHIPPING_SCAN_INTERVAL_SECONDS"] = "3600"  # one scan at start, one as it stops
    worker = start_worker(concurrency=1, **env)
    wait_for(
        lambda: (
            f"worker/{HOST}/{first.name}" in blob_names(azurite_server.connection_string, container)
        ),
        "the first file",
    )
    last = rotated(logs, "worker", 1)

    assert worker.stop() == 0

    assert blob_names(azurite_server.connection_string, container) == {
        f"worker/{HOST}/{first.name}",
        f"worker/{HOST}/{last.name}",
    }
    assert (logs / "worker.log").exists()  # the worker's own active log, never shipped
