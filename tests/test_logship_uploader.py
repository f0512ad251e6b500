"""logship's blob uploader against a real Azurite: upload and read back, blocks and MD5, retries,
the queue and its shutdown, bad credentials; and the older asyncio API on top of it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from logship import AsyncBlobStorageUploader, BlobUploader, StorageAccount
from logship.errors import LogShipError, PermanentUploadError, UploadAbandoned
from settings.redis_server import free_port
from tests.support.azurite import ACCOUNT_KEY, AzuriteServer, connection_string

# Generous: a loaded 2-core machine uploads 50 MB to Azurite in well under this.
UPLOAD_TIMEOUT_SECS = 120


def new_container() -> str:
    return f"logs-{uuid.uuid4().hex[:10]}"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def read_blob(connection: str, container: str, name: str) -> bytes:
    with BlobServiceClient.from_connection_string(connection) as service:
        return service.get_blob_client(container, name).download_blob().readall()


def uploader_for(server: AzuriteServer, container: str, **options: object) -> BlobUploader:
    options = {"first_delay_s": 0.05, "max_delay_s": 0.2, **options}
    account = StorageAccount(connection_string=server.connection_string)
    return BlobUploader(account, container, **options).start()  # type: ignore[arg-type]


def test_a_file_is_uploaded_into_a_new_container_and_reads_back(azurite_server, tmp_path):
    container = new_container()
    path = write(tmp_path / "web.2026-11-22.log", '{"level": "INFO", "message": "hello"}\n')
    uploader = uploader_for(azurite_server, container)
    try:
        result = uploader.submit(path, "web/h/web.2026-11-22.log").result(UPLOAD_TIMEOUT_SECS)
    finally:
        assert uploader.shutdown(timeout_s=30) == []

    assert not result.already_there
    assert read_blob(azurite_server.connection_string, container, result.blob_name) == (
        path.read_bytes()
    )
    with BlobServiceClient.from_connection_string(azurite_server.connection_string) as service:
        stored = service.get_blob_client(container, result.blob_name).get_blob_properties()
    assert bytes(stored.content_settings.content_md5) == hashlib.md5(path.read_bytes()).digest()


def test_the_same_file_is_never_written_twice(azurite_server, tmp_path):
    container = new_container()
    path = write(tmp_path / "a.2026-11-22.log", "line\n" * 100)
    uploader = uploader_for(azurite_server, container)
    try:
        first = uploader.submit(path, "a/h/a.log").result(UPLOAD_TIMEOUT_SECS)
        second = uploader.submit(path, "a/h/a.log").result(UPLOAD_TIMEOUT_SECS)
        # Other content under the same name is refused, not overwritten.
        other = write(tmp_path / "other.log", "different\n")
        conflict = uploader.submit(other, "a/h/a.log")
        with pytest.raises(PermanentUploadError, match=r"already exists .* other content"):
            conflict.result(UPLOAD_TIMEOUT_SECS)
    finally:
        uploader.shutdown(timeout_s=30)

    assert (first.already_there, second.already_there) == (False, True)
    assert azurite_server.committed_writes()[f"{container}/a/h/a.log"] == 1
    assert read_blob(azurite_server.connection_string, container, "a/h/a.log") == path.read_bytes()


def test_a_50_mb_file_goes_up_in_blocks_with_its_md5(azurite_server, tmp_path):
    container = new_container()
    path = tmp_path / "big.2026-11-22.log"
    block = os.urandom(1024 * 1024)
    with path.open("wb") as file:
        for index in range(50):
            file.write(block[index:] + block[:index])
    uploader = uploader_for(azurite_server, container, concurrency=4)
    try:
        result = uploader.submit(path, "big/h/big.log").result(UPLOAD_TIMEOUT_SECS)
    finally:
        uploader.shutdown(timeout_s=30)

    with BlobServiceClient.from_connection_string(azurite_server.connection_string) as service:
        blob = service.get_blob_client(container, "big/h/big.log")
        committed, _ = blob.get_block_list("committed")
        stored = blob.get_blob_properties()
        digest = hashlib.md5(usedforsecurity=False)
        for chunk in blob.download_blob().chunks():
            digest.update(chunk)
    assert len(committed) == 13  # 50 MiB in 4 MiB blocks
    assert stored.size == path.stat().st_size == 50 * 1024 * 1024
    assert digest.hexdigest() == result.md5_hex == bytes(stored.content_settings.content_md5).hex()


def test_one_failed_file_does_not_stop_the_worker(azurite_server, tmp_path):
    container = new_container()
    good = write(tmp_path / "good.log", "good\n")
    uploader = uploader_for(azurite_server, container)
    try:
        missing = uploader.submit(tmp_path / "missing.log", "x/missing.log")
        fine = uploader.submit(good, "x/good.log")
        with pytest.raises(PermanentUploadError, match="cannot read the file"):
            missing.result(UPLOAD_TIMEOUT_SECS)
        assert fine.result(UPLOAD_TIMEOUT_SECS).blob_name == "x/good.log"
    finally:
        uploader.shutdown(timeout_s=30)


def test_shutdown_waits_for_every_queued_upload(azurite_server, tmp_path):
    container = new_container()
    paths = [write(tmp_path / f"f{i}.log", f"file {i}\n" * 1000) for i in range(8)]
    uploader = uploader_for(azurite_server, container)
    futures = [uploader.submit(path, f"q/{path.name}") for path in paths]

    assert uploader.shutdown(timeout_s=UPLOAD_TIMEOUT_SECS) == []

    assert all(future.done() and future.exception() is None for future in futures)
    for path in paths:
        assert read_blob(azurite_server.connection_string, container, f"q/{path.name}") == (
            path.read_bytes()
        )
    with pytest.raises(RuntimeError, match="shut down"):
        uploader.submit(paths[0], "q/again.log")


def test_shutdown_gives_up_at_its_timeout_and_names_what_it_left(tmp_path, caplog):
    # Nothing listens on this port: every attempt fails to connect and is retried.
    account = StorageAccount(connection_string=connection_string(free_port()))
    uploader = BlobUploader(account, "logs", attempts=1000, first_delay_s=0.05, max_delay_s=0.1)
    paths = [write(tmp_path / f"f{i}.log", "x\n") for i in range(3)]
    futures = [uploader.submit(path, path.name) for path in paths]

    left = uploader.shutdown(timeout_s=0.5)

    assert sorted(left) == sorted(str(path) for path in paths)
    for future in futures:
        # The one in flight ends with its last attempt's error, the queued ones were abandoned.
        assert isinstance(future.exception(timeout=10), LogShipError)
    assert sum(isinstance(f.exception(), UploadAbandoned) for f in futures) >= 2
    assert "3 file(s) not uploaded" in caplog.text


def test_bad_credentials_are_one_clear_line_without_the_key(azurite_server, tmp_path):
    wrong_key = ACCOUNT_KEY[:-8] + "AAAAAAA="
    bad = azurite_server.connection_string.replace(ACCOUNT_KEY, wrong_key)
    uploader = BlobUploader(StorageAccount(connection_string=bad), new_container())
    try:
        failed = uploader.submit(write(tmp_path / "f.log", "x\n"), "f.log")
        error = failed.exception(UPLOAD_TIMEOUT_SECS)
    finally:
        uploader.shutdown(timeout_s=30)

    assert isinstance(error, PermanentUploadError)
    message = str(error)
    assert "\n" not in message
    assert "refused our credentials; check AZURE_STORAGE_CONNECTION_STRING" in message
    assert wrong_key not in message and ACCOUNT_KEY not in message


def test_the_older_async_uploader_as_its_documentation_used_it(azurite_server, tmp_path):
    container = new_container()
    path = write(tmp_path / "file.txt", "uploaded by the older API\n")

    async def older_usage() -> list[str]:
        # From the older library's documentation, with the connection string instead of an
        # account URL (Azurite has no Entra ID) and the import changed.
        uploader = AsyncBlobStorageUploader(
            connection_string=azurite_server.connection_string,
            container_name=container,
            max_retries=16,
            retry_delay=2.0,
        )
        await uploader.initialize()
        await uploader.upload_file(str(path), blob_name="uploaded-file.txt")
        return await uploader.shutdown()

    assert asyncio.run(older_usage()) == []
    assert read_blob(azurite_server.connection_string, container, "uploaded-file.txt") == (
        path.read_bytes()
    )
