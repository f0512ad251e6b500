"""logship's log monitor against a real Azurite: what it uploads (and what never), once only
across restarts and between two monitors, retention, the final scan, an Azurite that goes away
and comes back, and a real process that keeps running with bad storage credentials."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from logship import BlobUploader, LogMonitor, StorageAccount
from settings.redis_server import free_port
from tests.support.azurite import ACCOUNT_KEY, AzuriteServer, committed_writes, running_azurite
from tests.support.processes import ManagedProcess, python_args

HOST = "host-1"
APP = "web"
WAIT_SECS = 120


def day(days_ago: int) -> str:
    return (dt.date.today() - dt.timedelta(days=days_ago)).isoformat()


def rotated(logs: Path, days_ago: int, app: str = APP) -> Path:
    path = logs / f"{app}.{day(days_ago)}.log"
    path.write_text(f'{{"message": "a day of {app}, {days_ago} days ago"}}\n' * 50)
    return path


def wait_for(check: Callable[[], bool], what: str, timeout: float = WAIT_SECS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def blobs(connection: str, container: str) -> dict[str, bytes]:
    with BlobServiceClient.from_connection_string(connection) as service:
        client = service.get_container_client(container)
        if not client.exists():
            return {}
        return {
            blob.name: client.download_blob(blob.name).readall() for blob in client.list_blobs()
        }


def make_monitor(connection: str, container: str, logs: Path, **options: object) -> LogMonitor:
    uploader = BlobUploader(
        StorageAccount(connection_string=connection),
        container,
        attempts=int(options.pop("attempts", 200)),  # type: ignore[call-overload]
        first_delay_s=0.05,
        max_delay_s=0.3,
    )
    settings = {"retention_days": 7, "scan_interval_s": 0.2, "shutdown_timeout_s": 30.0}
    settings.update(options)
    return LogMonitor(logs, uploader, app_name=APP, host=HOST, **settings)  # type: ignore[arg-type]


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def container() -> str:
    return f"logs-{uuid.uuid4().hex[:10]}"


def test_rotated_files_go_up_oldest_first_and_the_active_file_never(
    azurite_server: AzuriteServer, logs: Path, container: str
):
    active = logs / f"{APP}.log"
    active.write_text('{"message": "being written now"}\n')
    files = [rotated(logs, 3), rotated(logs, 1), rotated(logs, 2)]
    (logs / "notes.txt").write_text("not a log")
    monitor = make_monitor(azurite_server.connection_string, container, logs)

    report = monitor.scan(deadline=time.monotonic() + WAIT_SECS)
    assert monitor.stop() == []

    assert report.uploaded == [f"{APP}.{day(3)}.log", f"{APP}.{day(2)}.log", f"{APP}.{day(1)}.log"]
    stored = blobs(azurite_server.connection_string, container)
    assert stored == {f"{APP}/{HOST}/{f.name}": f.read_bytes() for f in files}
    # Oldest first, as Azurite received them.
    log_text = azurite_server.log_path.read_text()
    order = sorted(files, key=lambda f: log_text.index(f"{container}/{APP}/{HOST}/{f.name}"))
    assert order == sorted(files, key=lambda f: f.name)
    assert all(active.name not in name for name in committed_writes(log_text))


def test_a_restarted_monitor_uploads_nothing_twice(
    azurite_server: AzuriteServer, logs: Path, container: str
):
    first_files = [rotated(logs, 2), rotated(logs, 1)]
    first = make_monitor(azurite_server.connection_string, container, logs).start()
    wait_for(lambda: first.scans >= 2, "two scans")
    assert first.stop() == []

    later = rotated(logs, 0, app="worker")  # a file rotated while the process was down
    log_before = len(azurite_server.log_path.read_text())
    second = make_monitor(azurite_server.connection_string, container, logs).start()
    wait_for(lambda: second.scans >= 2, "two scans after the restart")
    assert second.stop() == []

    # The state file, not just the uploader's MD5 check, kept it from even asking about them.
    after_restart = azurite_server.log_path.read_text()[log_before:]
    assert not any(f.name in after_restart for f in first_files)
    assert later.name in after_restart

    writes = azurite_server.committed_writes()
    expected = {f"{container}/{APP}/{HOST}/{f.name}" for f in [*first_files, later]}
    assert {name for name in writes if name.startswith(container)} == expected
    assert all(writes[name] == 1 for name in expected)


def test_two_monitors_on_one_directory_upload_each_file_once(
    azurite_server: AzuriteServer, logs: Path, container: str
):
    files = [rotated(logs, days) for days in range(1, 21)]
    monitors = [make_monitor(azurite_server.connection_string, container, logs) for _ in range(2)]
    start = threading.Barrier(2)
    reports = []

    def scan(monitor: LogMonitor) -> None:
        start.wait()
        reports.append(monitor.scan(deadline=time.monotonic() + WAIT_SECS))

    threads = [threading.Thread(target=scan, args=(m,)) for m in monitors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_SECS)
    for monitor in monitors:
        monitor.stop()

    uploaded = [name for report in reports for name in report.uploaded]
    assert sorted(uploaded) == sorted(f.name for f in files)  # each by exactly one of them
    writes = azurite_server.committed_writes()
    assert all(writes[f"{container}/{APP}/{HOST}/{f.name}"] == 1 for f in files)


def test_retention_deletes_only_files_that_were_uploaded(
    azurite_server: AzuriteServer, logs: Path, container: str
):
    old, older, recent = rotated(logs, 9), rotated(logs, 30), rotated(logs, 2)
    # First with no storage reachable: nothing is uploaded, so nothing may be deleted.
    unreachable = f"http://127.0.0.1:{free_port()}/devstoreaccount1"
    offline_connection = azurite_server.connection_string.split("BlobEndpoint=")[0] + (
        f"BlobEndpoint={unreachable};"
    )
    offline = make_monitor(offline_connection, container, logs, attempts=1)
    report = offline.scan(deadline=time.monotonic() + WAIT_SECS)
    offline.stop()
    assert report.deleted == [] and len(report.failed) == 3
    assert old.exists() and older.exists() and recent.exists()

    online = make_monitor(azurite_server.connection_string, container, logs)
    report = online.scan(deadline=time.monotonic() + WAIT_SECS)
    online.stop()

    assert sorted(report.deleted) == sorted([old.name, older.name])
    assert not old.exists() and not older.exists() and recent.exists()
    stored = blobs(azurite_server.connection_string, container)
    assert set(stored) == {f"{APP}/{HOST}/{f.name}" for f in (old, older, recent)}


def test_stopping_makes_a_final_scan(azurite_server: AzuriteServer, logs: Path, container: str):
    monitor = make_monitor(
        azurite_server.connection_string, container, logs, scan_interval_s=3600
    ).start()
    wait_for(lambda: monitor.scans >= 1, "the first scan")
    last = rotated(logs, 1)  # rotated after the last scan, before the process stops

    assert monitor.stop() == []

    assert f"{APP}/{HOST}/{last.name}" in blobs(azurite_server.connection_string, container)


@pytest.mark.slow
def test_azurite_stopped_mid_run_and_restarted_every_file_arrives_once(
    tmp_path: Path, logs: Path, container: str
):
    from tests.support.azurite import require_node

    require_node()
    port, data, log_dir = free_port(), tmp_path / "azurite-data", tmp_path / "azurite-log"
    data.mkdir()
    before = [rotated(logs, days) for days in (6, 5, 4)]
    with running_azurite(log_dir, port=port, location=data) as connection:
        # Few attempts per scan, so files that fail wait for the next scan, as in a long outage.
        monitor = make_monitor(connection, container, logs, attempts=4).start()
        wait_for(lambda: len(blobs(connection, container)) == 3, "the first three files")
    # Azurite is down: these fail, are retried, and wait for the next scan.
    during = [rotated(logs, days) for days in (3, 2, 1)]
    scans_when_down = monitor.scans
    wait_for(lambda: monitor.scans >= scans_when_down + 2, "scans while Azurite is down")
    with running_azurite(log_dir, port=port, location=data) as connection:
        wait_for(lambda: len(blobs(connection, container)) == 6, "every file after the restart")
        assert monitor.stop() == []
        stored = blobs(connection, container)

    assert stored == {f"{APP}/{HOST}/{f.name}": f.read_bytes() for f in [*before, *during]}
    writes = committed_writes((log_dir / "azurite.log").read_text())
    assert {name: writes[name] for name in writes if name.startswith(container)} == {
        f"{container}/{APP}/{HOST}/{f.name}": 1 for f in [*before, *during]
    }


def test_a_process_with_bad_credentials_logs_one_line_and_keeps_running(
    azurite_server: AzuriteServer, conduit_env: dict[str, str], tmp_path: Path, logs: Path
):
    """The bridge, a real process with LOG_DIR, started with a wrong storage key."""
    rotated(logs, 1, app="bridge")
    wrong_key = ACCOUNT_KEY[:-8] + "AAAAAAA="
    env = {
        **conduit_env,
        "APP_NAME": "bridge",
        "LOG_DIR": str(logs),
        "LOG_FORMAT": "json",
        "AZURE_STORAGE_CONNECTION_STRING": azurite_server.connection_string.replace(
            ACCOUNT_KEY, wrong_key
        ),
        "LOG_SHIPPING_SCAN_INTERVAL_SECONDS": "0.5",
        "LOG_SHIPPING_RETRY_DELAY_SECONDS": "0.05",
    }
    bridge = ManagedProcess(
        python_args("-m", "bridge"), env, tmp_path / "bridge.out", name="bridge"
    ).start()
    try:
        refused = "refused our credentials; check AZURE_STORAGE_CONNECTION_STRING"
        bridge.wait_until(lambda: bridge.output().count(refused) >= 2, WAIT_SECS, "two refusals")
        assert bridge.process is not None and bridge.process.poll() is None
        lines = [line for line in bridge.output().splitlines() if refused in line]
        assert all(line.startswith("{") and line.endswith("}") for line in lines)
        assert wrong_key not in bridge.output()
    finally:
        assert bridge.stop() == 0


def test_a_process_ships_its_rotated_logs_and_a_file_rotated_before_it_stops(
    azurite_server: AzuriteServer, conduit_env: dict[str, str], tmp_path: Path, logs: Path
):
    """The bridge's hook: shipping starts with the process and makes a final scan as it stops."""
    first = rotated(logs, 2, app="bridge")
    container = f"logs-{uuid.uuid4().hex[:10]}"
    env = {
        **conduit_env,
        "APP_NAME": "bridge",
        "LOG_DIR": str(logs),
        "AZURE_STORAGE_CONNECTION_STRING": azurite_server.connection_string,
        "LOG_SHIPPING_CONTAINER": container,
        "LOG_SHIPPING_HOST_NAME": HOST,
        # One scan at start; the next file can only go up in the final scan.
        "LOG_SHIPPING_SCAN_INTERVAL_SECONDS": "3600",
    }
    bridge = ManagedProcess(
        python_args("-m", "bridge"), env, tmp_path / "bridge.out", name="bridge"
    ).start()
    try:
        bridge.wait_until(
            lambda: (
                f"bridge/{HOST}/{first.name}" in blobs(azurite_server.connection_string, container)
            ),
            WAIT_SECS,
            "the first file in blob storage",
        )
        last = rotated(logs, 1, app="bridge")
    finally:
        assert bridge.stop() == 0

    stored = blobs(azurite_server.connection_string, container)
    assert stored == {f"bridge/{HOST}/{f.name}": f.read_bytes() for f in (first, last)}
    assert (logs / "bridge.log").exists()  # the active file, written but never shipped


def test_a_claim_by_a_live_process_is_respected_and_a_dead_ones_is_taken_over(
    azurite_server: AzuriteServer, logs: Path, container: str
):
    import os
    import socket
    import subprocess

    from logship.state import StateStore

    held, orphaned = rotated(logs, 2), rotated(logs, 1)
    gone = subprocess.Popen(["true"])  # a pid that no longer runs
    gone.wait()
    store = StateStore(logs)
    with store.locked() as state:
        until = time.time() + 3600
        host = socket.gethostname()
        state.claims[held.name] = {
            "owner": "other",
            "host": host,
            "pid": os.getppid(),
            "until": until,
        }
        state.claims[orphaned.name] = {
            "owner": "dead",
            "host": host,
            "pid": gone.pid,
            "until": until,
        }

    monitor = make_monitor(azurite_server.connection_string, container, logs)
    report = monitor.scan(deadline=time.monotonic() + WAIT_SECS)
    monitor.stop()

    assert report.uploaded == [orphaned.name]  # a killed uploader's file is not stuck for 30 min
    assert report.skipped_claimed == [held.name]  # a live process is uploading this one
    assert held.name not in StateStore(logs).read().uploaded
