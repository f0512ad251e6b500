"""The older library's asyncio classes, ``AsyncBlobStorageUploader`` and ``LogMonitorService``,
with their names, constructors and methods, over the threaded :class:`BlobUploader` and
:class:`LogMonitor` (one implementation; the event loop is never blocked by an upload).

    uploader = AsyncBlobStorageUploader(account_url="https://acct.blob.core.windows.net",
                                        container_name="my-container", max_retries=16)
    await uploader.initialize()
    await uploader.upload_file("/path/to/file.txt", blob_name="uploaded-file.txt")
    await uploader.shutdown()

    monitor = LogMonitorService(logs_dir="/app/logs", account_name="acct",
                                container_name="logs", app_name="my-application")
    await monitor.initialize()
    ...
    await monitor.shutdown()

Anything not given comes from settings (settings/logship.py and the storage fields of
settings/config.py), so ``AZURE_STORAGE_CONNECTION_STRING`` works for both.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from logship.account import StorageAccount
from logship.monitor import LogMonitor
from logship.uploader import BlobUploader, UploadResult
from settings import Settings, get_logger, get_settings

log = get_logger(__name__)


def _account(
    settings: Settings,
    account_url: str | None,
    account_name: str | None = None,
    connection_string: str | None = None,
) -> StorageAccount:
    if connection_string:
        return StorageAccount(connection_string=connection_string)
    if account_url:
        return StorageAccount(account_url=account_url)
    if account_name:
        return StorageAccount.named(account_name)
    configured = StorageAccount.from_settings(settings)
    if configured is None:
        raise ValueError(
            "no storage account: pass account_url, or set AZURE_STORAGE_CONNECTION_STRING or "
            "AZURE_STORAGE_ACCOUNT_URL"
        )
    return configured


def uploader_from_settings(settings: Settings, account: StorageAccount) -> BlobUploader:
    """A :class:`BlobUploader` with the retry and block settings of settings/logship.py."""
    return BlobUploader(
        account,
        settings.logs_container,
        attempts=settings.logs_upload_attempts,
        first_delay_s=settings.logs_upload_first_delay_s,
        max_delay_s=settings.logs_upload_max_delay_s,
        concurrency=settings.logs_upload_concurrency,
    )


def _log_failure(future: asyncio.Future[UploadResult]) -> None:
    error = None if future.cancelled() else future.exception()
    if error is not None:
        log.warning("upload failed: %s", error)


class AsyncBlobStorageUploader:
    """The older ``common.blob_storage.AsyncBlobStorageUploader``: a background upload queue."""

    def __init__(
        self,
        account_url: str | None = None,
        container_name: str | None = None,
        max_retries: int | None = None,
        retry_delay: float | None = None,
        *,
        connection_string: str | None = None,
    ) -> None:
        settings = get_settings()
        self._uploader = BlobUploader(
            _account(settings, account_url, connection_string=connection_string),
            container_name or settings.logs_container,
            attempts=max_retries if max_retries is not None else settings.logs_upload_attempts,
            first_delay_s=(
                retry_delay if retry_delay is not None else settings.logs_upload_first_delay_s
            ),
            max_delay_s=settings.logs_upload_max_delay_s,
            concurrency=settings.logs_upload_concurrency,
        )
        self._shutdown_timeout_s = settings.logs_shutdown_timeout_s
        self.container_name = self._uploader.container

    async def initialize(self) -> None:
        """Start the background worker (the container is created on the first upload)."""
        self._uploader.start()

    async def upload_file(
        self, file_path: str, blob_name: str | None = None, app_name: str | None = None
    ) -> asyncio.Future[UploadResult]:
        """Queue a file and return at once; the returned future completes when it is uploaded.
        The blob is ``[app_name/]blob_name`` (default: the file's name)."""
        name = blob_name or os.path.basename(file_path)
        if app_name:
            name = f"{app_name}/{name}"
        future = asyncio.wrap_future(self._uploader.submit(file_path, name))
        # The older callers never awaited uploads: say what failed here, not as "never retrieved".
        future.add_done_callback(_log_failure)
        return future

    def pending(self) -> int:
        return self._uploader.pending()

    async def shutdown(self, timeout: float | None = None) -> list[str]:
        """Wait for the queued uploads (up to ``timeout``, default LOG_SHIPPING_SHUTDOWN_TIMEOUT_
        SECONDS) and stop; returns the files left, which are also logged."""
        wait = self._shutdown_timeout_s if timeout is None else timeout
        return await asyncio.to_thread(self._uploader.shutdown, wait)


class LogMonitorService:
    """The older ``common.log_monitor.LogMonitorService``: ships a directory's rotated logs."""

    def __init__(  # noqa: PLR0917 - the older constructor took these positionally
        self,
        logs_dir: str,
        account_name: str | None = None,
        account_url: str | None = None,
        container_name: str | None = None,
        app_name: str | None = None,
        retention_days: int | None = None,
        scan_interval: float | None = None,
        *,
        connection_string: str | None = None,
    ) -> None:
        settings = get_settings()
        account = _account(settings, account_url, account_name, connection_string)
        uploader = uploader_from_settings(settings, account)
        if container_name:
            uploader.container = container_name
        self.monitor = LogMonitor(
            Path(logs_dir),
            uploader,
            app_name=app_name or settings.app_name,
            host=settings.logs_host_name or socket.gethostname(),
            retention_days=retention_days or settings.logs_retention_days,
            scan_interval_s=scan_interval or settings.logs_scan_interval_s,
            shutdown_timeout_s=settings.logs_shutdown_timeout_s,
        )

    async def initialize(self) -> None:
        """Start scanning in the background."""
        self.monitor.start()

    async def shutdown(self) -> list[str]:
        """Final scan, wait for the uploads, stop; returns the files left for the next start."""
        return await asyncio.to_thread(self.monitor.stop)
