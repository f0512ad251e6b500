"""The blob uploader: files queued from any thread, uploaded by one background thread.

    uploader = BlobUploader(StorageAccount.from_settings(settings), "logs").start()
    future = uploader.submit("/var/log/conduit/web.2026-11-27.log", "web/host-1/web.2026-11-27.log")
    future.result()                      # an UploadResult, or the LogShipError that stopped it
    left = uploader.shutdown(timeout_s=20)   # waits for the queue; names what it left

Each upload:
- creates the container if it is missing;
- is retried through tenacity (``attempts`` in all, the first wait ``first_delay_s``, then
  exponential backoff with jitter up to ``max_delay_s``), with a fresh client after a connection
  failure, so a restarted endpoint or a stale keep-alive socket does not fail every retry;
- sends a file larger than one request in blocks, several at once (the SDK's ``max_concurrency``),
  each block with its own MD5 checked by the service, and stores the whole file's Content-MD5,
  checked after the upload, so a torn upload is detected instead of kept;
- never writes a blob twice: an existing blob with the same MD5 counts as uploaded (the previous
  attempt succeeded but its answer was lost), one with another MD5 is a :class:`BlobConflict`.

One failed file never stops the worker: its future gets the error, and the next file goes on.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_when_event_set,
    wait_exponential_jitter,
)

from logship.account import StorageAccount
from logship.errors import (
    BlobConflict,
    TransientUploadError,
    UploadAbandoned,
    classify,
)
from settings import get_logger

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient, ContainerClient

log = get_logger(__name__)

# Read files in pieces this large to hash them, so a large log never sits whole in memory.
HASH_CHUNK_BYTES = 1024 * 1024
# After the shutdown timeout, how long the worker thread gets to notice it must stop.
ABANDON_JOIN_SECS = 5.0


@dataclass(frozen=True)
class UploadResult:
    """What one upload did."""

    file_path: str
    blob_name: str
    size: int
    md5_hex: str
    already_there: bool  # True: an earlier attempt had uploaded it; nothing was written now


@dataclass
class _Job:
    file_path: str
    blob_name: str
    future: Future[UploadResult]


def file_md5(path: str | Path) -> bytes:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        while chunk := file.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.digest()


class BlobUploader:
    """Uploads files to one container from a background thread (see the module docstring)."""

    def __init__(
        self,
        account: StorageAccount,
        container: str,
        *,
        attempts: int = 16,
        first_delay_s: float = 1.0,
        max_delay_s: float = 60.0,
        concurrency: int = 4,
    ) -> None:
        self.account, self.container = account, container
        self.attempts, self.first_delay_s, self.max_delay_s = attempts, first_delay_s, max_delay_s
        self.concurrency = concurrency
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._abandon = threading.Event()  # set when shutdown's wait is over: stop retrying
        self._closed = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._current: _Job | None = None
        self._left: list[str] = []  # files given up on because shutdown's wait was over
        self._service: BlobServiceClient | None = None
        self._container_ready = False

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> BlobUploader:
        with self._lock:
            if self._closed:
                raise RuntimeError("this BlobUploader was shut down; make a new one")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="logship uploader", daemon=True
                )
                self._thread.start()
        return self

    def submit(self, file_path: str | Path, blob_name: str) -> Future[UploadResult]:
        """Queue a file; the future holds its :class:`UploadResult` or its :class:`LogShipError`."""
        future: Future[UploadResult] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("this BlobUploader was shut down; it takes no more files")
            self._queue.put(_Job(str(file_path), blob_name, future))
        self.start()
        return future

    def pending(self) -> int:
        """Files queued or being uploaded."""
        return self._queue.qsize() + (1 if self._current is not None else 0)

    def shutdown(self, timeout_s: float = 30.0) -> list[str]:
        """Wait up to ``timeout_s`` for every queued upload, then stop; returns the files left
        (each left file's future gets :class:`UploadAbandoned`), after logging them."""
        with self._lock:
            self._closed = True
            thread = self._thread
            self._queue.put(None)
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                self._abandon.set()
                thread.join(ABANDON_JOIN_SECS)
        left = self._drain_abandoned()
        if left:
            log.warning(
                "log shipping stopped with %d file(s) not uploaded (retried at the next start): %s",
                len(left),
                ", ".join(left),
            )
        self._close_client()
        return left

    def _drain_abandoned(self) -> list[str]:
        with self._lock:
            left = list(self._left)
        current = self._current
        if current is not None and not current.future.done():
            left.append(current.file_path)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                left.append(job.file_path)
                job.future.set_exception(UploadAbandoned(f"{job.file_path}: uploader stopped"))
        return list(dict.fromkeys(left))  # a file the worker gave up on as we looked: once

    # --- the worker ------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._current = job
            try:
                if self._abandon.is_set():
                    raise UploadAbandoned(f"{job.file_path}: uploader stopped")
                result = self.upload(job.file_path, job.blob_name)
                if not job.future.done():  # shutdown may have given up on it meanwhile
                    job.future.set_result(result)
            except Exception as error:  # noqa: BLE001 - one bad file must not stop the worker
                if self._abandon.is_set():
                    with self._lock:
                        self._left.append(job.file_path)
                if not job.future.done():
                    job.future.set_exception(classify(error, self.account.credential_setting))
            finally:
                self._current = None

    def upload(self, file_path: str, blob_name: str) -> UploadResult:
        """Upload one file now, in the calling thread, with the retries described above."""
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts) | stop_when_event_set(self._abandon),
            wait=wait_exponential_jitter(
                multiplier=self.first_delay_s, max=self.max_delay_s, jitter=self.first_delay_s
            ),
            retry=retry_if_exception_type(TransientUploadError),
            sleep=self._sleep,
            before_sleep=self._before_retry,
            reraise=True,
        )
        return retrying(self._attempt, file_path, blob_name)

    def _sleep(self, seconds: float) -> None:
        # Shutdown cuts a retry wait short instead of holding the process.
        self._abandon.wait(seconds)

    def _before_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, TransientUploadError) and error.reconnect:
            self._close_client()
        log.info(
            "log upload attempt %d of %d failed, retrying: %s",
            state.attempt_number,
            self.attempts,
            error,
        )

    def _attempt(self, file_path: str, blob_name: str) -> UploadResult:
        try:
            return self._upload_once(file_path, blob_name)
        except Exception as error:  # noqa: BLE001 - classify maps every error, at this boundary
            raise classify(error, self.account.credential_setting) from None

    def _upload_once(self, file_path: str, blob_name: str) -> UploadResult:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
        from azure.storage.blob import ContentSettings

        md5 = file_md5(file_path)
        size = Path(file_path).stat().st_size
        blob = self._container().get_blob_client(blob_name)
        existing = self._stored_md5(blob)
        if existing is not None:
            return self._existing(file_path, blob_name, size, md5, existing)
        try:
            with open(file_path, "rb") as data:
                blob.upload_blob(
                    data,
                    length=size,
                    overwrite=False,  # If-None-Match: *, so two writers cannot both write
                    validate_content=True,  # an MD5 per request, checked by the service
                    max_concurrency=self.concurrency,
                    content_settings=ContentSettings(
                        content_type="text/plain; charset=utf-8", content_md5=bytearray(md5)
                    ),
                )
        except ResourceExistsError:
            # Another writer (or our own earlier attempt whose answer was lost) got there first.
            return self._existing(file_path, blob_name, size, md5, self._stored_md5(blob))
        except ResourceNotFoundError as error:
            if getattr(error, "error_code", None) == "ContainerNotFound":
                self._container_ready = False  # deleted under us: create it on the next attempt
                raise TransientUploadError("the container disappeared; creating it again") from None
            raise
        stored = self._stored_md5(blob)
        if stored != md5:
            raise TransientUploadError(
                f"{blob_name}: the stored Content-MD5 does not match the file (torn upload)"
            )
        return UploadResult(file_path, blob_name, size, md5.hex(), already_there=False)

    def _existing(
        self, file_path: str, blob_name: str, size: int, md5: bytes, stored: bytes | None
    ) -> UploadResult:
        if stored == md5:
            return UploadResult(file_path, blob_name, size, md5.hex(), already_there=True)
        raise BlobConflict(f"{blob_name} already exists in {self.container} with other content")

    @staticmethod
    def _stored_md5(blob: Any) -> bytes | None:
        """The blob's Content-MD5; None when the blob does not exist. A blob without one (written
        by something else) yields b"", which matches no file."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            properties = blob.get_blob_properties()
        except ResourceNotFoundError:
            return None
        stored = properties.content_settings.content_md5
        return bytes(stored) if stored else b""

    # --- the client ------------------------------------------------------------------------------
    def _container(self) -> ContainerClient:
        from azure.core.exceptions import ResourceExistsError

        if self._service is None:
            self._service = self.account.client()
            self._container_ready = False
        container = self._service.get_container_client(self.container)
        if not self._container_ready:
            try:
                container.create_container()
                log.info("created blob container %s for log shipping", self.container)
            except ResourceExistsError:
                pass
            self._container_ready = True
        return container

    def _close_client(self) -> None:
        service, self._service = self._service, None
        if service is not None:
            try:
                service.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail too
                pass


def wait_until_done(futures: list[Future[UploadResult]], deadline: float) -> None:
    """Wait for every future until ``deadline`` (a ``time.monotonic()`` value)."""
    for future in futures:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            future.result(remaining)
        except Exception:  # noqa: BLE001 - the caller reads each outcome itself
            pass
