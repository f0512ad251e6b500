"""``python -m logship list / get``: shipped logs read back from a real Azurite, the download
checked against the MD5 the uploader stored."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContentSettings

from logship import BlobUploader, StorageAccount
from logship.cli import main
from tests.support.azurite import AzuriteServer
from tests.support.processes import ManagedProcess, python_args


@pytest.fixture
def shipped(azurite_server: AzuriteServer, tmp_path: Path, monkeypatch) -> tuple[str, Path]:
    """A container with two uploaded logs; settings point at it."""
    container = f"logs-{uuid.uuid4().hex[:10]}"
    uploader = BlobUploader(
        StorageAccount(connection_string=azurite_server.connection_string), container
    )
    source = tmp_path / "web.2026-11-27.log"
    source.write_text('{"level": "ERROR", "message": "it broke"}\n' * 100)
    other = tmp_path / "web.2026-11-28.log"
    other.write_text('{"level": "INFO", "message": "fine"}\n')
    for path in (source, other):
        uploader.submit(path, f"web/host-1/{path.name}").result(60)
    assert uploader.shutdown(30) == []
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_server.connection_string)
    monkeypatch.setenv("LOG_SHIPPING_CONTAINER", container)
    return container, source


def test_list_then_get_reads_a_log_back_whole(shipped, tmp_path, capsys):
    _, source = shipped
    assert main(["list", "web/"]) == 0
    listed = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [row[0] for row in listed] == [
        "web/host-1/web.2026-11-27.log",
        "web/host-1/web.2026-11-28.log",
    ]
    assert int(listed[0][1]) == source.stat().st_size

    out = tmp_path / "back.log"
    assert main(["get", "web/host-1/web.2026-11-27.log", "-o", str(out)]) == 0
    assert out.read_bytes() == source.read_bytes()


def test_a_copy_that_does_not_match_its_md5_is_refused(shipped, azurite_server, tmp_path, capsys):
    container, _ = shipped
    with BlobServiceClient.from_connection_string(azurite_server.connection_string) as service:
        blob = service.get_blob_client(container, "web/host-1/damaged.log")
        blob.upload_blob(b"not what was written")
        # The stored MD5 now names other content, as after a copy damaged in storage.
        blob.set_http_headers(ContentSettings(content_md5=bytearray(16)))
    out = tmp_path / "damaged.log"

    assert main(["get", "web/host-1/damaged.log", "-o", str(out)]) == 2

    assert "does not match its Content-MD5" in capsys.readouterr().err
    assert not out.exists()


def test_the_command_runs_as_a_module_and_says_what_is_missing(conduit_env, tmp_path):
    env = {k: v for k, v in conduit_env.items() if not k.startswith("AZURE_STORAGE")}
    command = ManagedProcess(python_args("-m", "logship", "list"), env, tmp_path / "out.log")
    command.start()
    assert command.process is not None and command.process.wait(60) == 2
    command.stop()
    assert "set AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_URL" in command.output()
