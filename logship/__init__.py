"""Log shipping: rotated log files uploaded to Blob Storage in the background.

- :class:`BlobUploader` (threaded) and :class:`AsyncBlobStorageUploader` (the older asyncio API)
  upload files with retries, in blocks, with MD5 checks (uploader.py, aio.py);
- :class:`LogMonitor` and :class:`LogMonitorService` (the older API) ship a log directory's
  rotated files and expire the uploaded ones (monitor.py, aio.py);
- :func:`start_log_shipping` / :func:`stop_log_shipping` are the hooks every process calls.

See logship/README.md for where the logs go and how to read them back.
"""

from logship.account import StorageAccount
from logship.aio import AsyncBlobStorageUploader, LogMonitorService
from logship.errors import LogShipError
from logship.monitor import LogMonitor, ScanReport
from logship.process import start_log_shipping, stop_log_shipping
from logship.uploader import BlobUploader, UploadResult

__all__ = [
    "AsyncBlobStorageUploader",
    "BlobUploader",
    "LogMonitor",
    "LogMonitorService",
    "LogShipError",
    "ScanReport",
    "StorageAccount",
    "UploadResult",
    "start_log_shipping",
    "stop_log_shipping",
]
