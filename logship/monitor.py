"""The log monitor: every scan interval, uploads the log directory's rotated files and expires
the old ones; a final scan when the process stops.

    monitor = LogMonitor(logs_dir, uploader, app_name="web", host="host-1", retention_days=30)
    monitor.start()
    ...
    monitor.stop()        # final scan, then waits for the uploads (up to shutdown_timeout_s)

A scan:
1. lists the rotated files (logship/naming.py: a date in the name); the active file has none and
   is never read;
2. under the directory's lock (logship/state.py), claims those neither uploaded nor claimed by a
   live process, oldest first;
3. uploads them to ``<container>/<app_name>/<host>/<file>`` through the :class:`BlobUploader`,
   recording each success (and releasing each failure, retried next scan);
4. deletes rotated files past the retention, but only those recorded as uploaded.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from logship.errors import BlobConflict, LogShipError
from logship.naming import (
    RotatedFile,
    blob_name,
    conflict_blob_name,
    expired,
    rotated_day,
    upload_order,
)
from logship.state import StateStore
from logship.uploader import BlobUploader, UploadResult, file_md5
from settings import get_logger

log = get_logger(__name__)

# How long a scan in the background waits for its uploads before the next scan: about the
# longest an upload's retries take (16 attempts, waits capped at a minute).
SCAN_UPLOAD_WAIT_SECS = 20 * 60


@dataclass
class ScanReport:
    """What one scan did (file names)."""

    uploaded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    skipped_claimed: list[str] = field(default_factory=list)


class LogMonitor:
    """Ships one log directory's rotated files from a background thread (see the module doc)."""

    def __init__(
        self,
        logs_dir: str | Path,
        uploader: BlobUploader,
        *,
        app_name: str,
        host: str,
        retention_days: int = 30,
        scan_interval_s: float = 60.0,
        shutdown_timeout_s: float = 20.0,
    ) -> None:
        self.logs_dir = Path(logs_dir)
        self.uploader = uploader
        self.app_name, self.host = app_name, host
        self.retention_days = retention_days
        self.scan_interval_s = scan_interval_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.store = StateStore(self.logs_dir)
        self.scans = 0  # completed scans, for health checks and tests
        self._stop = threading.Event()
        self._scan_lock = threading.Lock()  # the loop's scan and the final scan never overlap
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> LogMonitor:
        if self._thread is None:
            self.uploader.start()
            self._thread = threading.Thread(target=self._run, name="logship monitor", daemon=True)
            self._thread.start()
            log.info(
                "shipping rotated logs of %s to blob container %s/%s/%s/ every %.0f s",
                self.logs_dir,
                self.uploader.container,
                self.app_name,
                self.host,
                self.scan_interval_s,
            )
        return self

    def stop(self) -> list[str]:
        """Stop scanning, make a final scan, and wait for the uploads up to the shutdown timeout;
        returns the files left for the next start."""
        deadline = time.monotonic() + self.shutdown_timeout_s
        self._stop.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread is None or not self._thread.is_alive():
            try:
                self.scan(deadline=deadline)
            except Exception as error:  # noqa: BLE001 - stopping must not raise
                log.warning("final log scan failed: %s", error)
        else:
            log.warning("no final log scan: the last scan was still uploading at the timeout")
        return self.uploader.shutdown(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan(deadline=time.monotonic() + SCAN_UPLOAD_WAIT_SECS)
            except Exception as error:  # noqa: BLE001 - the next scan may succeed
                log.warning("log scan of %s failed: %s", self.logs_dir, error)
            self._stop.wait(self.scan_interval_s)

    # --- one scan --------------------------------------------------------------------------------
    def rotated_files(self) -> list[RotatedFile]:
        found: list[RotatedFile] = []
        with os.scandir(self.logs_dir) as entries:
            for entry in entries:
                day = rotated_day(entry.name)
                if day is None or not entry.is_file(follow_symlinks=False):
                    continue
                stat = entry.stat(follow_symlinks=False)
                found.append(RotatedFile(entry.name, day, stat.st_mtime, stat.st_size))
        return upload_order(found)

    def scan(self, deadline: float) -> ScanReport:
        """One scan (see the module docstring); waits for its uploads until ``deadline``."""
        with self._scan_lock:
            report = ScanReport()
            if not self.logs_dir.is_dir():
                return report
            files = self.rotated_files()
            claimed = self._claim(files, report)
            futures: list[tuple[RotatedFile, Future[UploadResult]]] = [
                (f, self.uploader.submit(self.logs_dir / f.name, self._blob_name(f.name)))
                for f in claimed
            ]
            results: dict[str, UploadResult] = {}
            for rotated, future in futures:
                result = self._outcome(rotated, future, deadline)
                if result is not None:
                    results[rotated.name] = result
                    report.uploaded.append(rotated.name)
                else:
                    report.failed.append(rotated.name)
            self._record(claimed, results)
            self._expire(files, report)
            self.scans += 1
            return report

    def _blob_name(self, file_name: str) -> str:
        return blob_name(self.app_name, self.host, file_name)

    def _claim(self, files: list[RotatedFile], report: ScanReport) -> list[RotatedFile]:
        now = time.time()
        claimed: list[RotatedFile] = []
        with self.store.locked() as state:
            for rotated in files:
                if rotated.name in state.uploaded:
                    continue
                if state.claimed_by_other(rotated.name, self.store.owner, now):
                    report.skipped_claimed.append(rotated.name)
                    continue
                state.claims[rotated.name] = self.store.claim()
                claimed.append(rotated)
        return claimed

    def _outcome(
        self, rotated: RotatedFile, future: Future[UploadResult], deadline: float
    ) -> UploadResult | None:
        try:
            return future.result(max(0.0, deadline - time.monotonic()))
        except BlobConflict:
            # The name holds another file's content (rotated twice to one date): keep both.
            path = self.logs_dir / rotated.name
            try:
                renamed = conflict_blob_name(self._blob_name(rotated.name), file_md5(path).hex())
                return self.uploader.upload(str(path), renamed)
            except LogShipError as error:
                log.warning("log file %s not uploaded (next scan retries): %s", rotated.name, error)
                return None
        except LogShipError as error:
            log.warning("log file %s not uploaded (next scan retries): %s", rotated.name, error)
            return None
        except TimeoutError:
            log.warning("log file %s still uploading at the deadline", rotated.name)
            return None

    def _record(self, claimed: list[RotatedFile], results: dict[str, UploadResult]) -> None:
        if not claimed:
            return
        with self.store.locked() as state:
            for rotated in claimed:
                if state.claims.get(rotated.name, {}).get("owner") == self.store.owner:
                    del state.claims[rotated.name]
                result = results.get(rotated.name)
                if result is not None:
                    state.uploaded[rotated.name] = {
                        "blob": result.blob_name,
                        "size": result.size,
                        "md5": result.md5_hex,
                        "at": time.time(),
                    }
                    log.info(
                        "log file %s %s %s/%s",
                        rotated.name,
                        "was already at" if result.already_there else "uploaded to",
                        self.uploader.container,
                        result.blob_name,
                    )

    def _expire(self, files: list[RotatedFile], report: ScanReport) -> None:
        today = dt.date.today()
        present = {f.name for f in files}
        with self.store.locked() as state:
            for rotated in files:
                if not expired(rotated.day, today, self.retention_days):
                    continue
                if rotated.name not in state.uploaded:
                    continue  # never delete what exists nowhere else
                try:
                    (self.logs_dir / rotated.name).unlink()
                except FileNotFoundError:
                    pass
                present.discard(rotated.name)
                report.deleted.append(rotated.name)
            # Forget records of files gone from the directory and past retention: the state
            # stays small, and no file of that name can come back (its date has passed).
            for name in list(state.uploaded):
                day = rotated_day(name)
                if name not in present and (
                    day is None or expired(day, today, self.retention_days)
                ):
                    del state.uploaded[name]
