"""Log shipping for a Conduit process: one call when it starts, one when it stops.

    start_log_shipping(settings)     # web (gunicorn post_fork), worker (worker_init), bridge
    ...
    stop_log_shipping()              # worker_exit, worker_shutdown, the bridge's finally

Shipping runs when ``LOG_DIR`` is set, a storage account is configured
(``AZURE_STORAGE_CONNECTION_STRING`` or ``AZURE_STORAGE_ACCOUNT_URL``) and
``LOG_SHIPPING_ENABLED`` is not false; otherwise both calls do nothing. A process forked from one
that was shipping (a gunicorn worker) starts its own monitor: threads do not survive a fork.
"""

from __future__ import annotations

import os
import socket
import threading

from logship.account import StorageAccount
from logship.aio import uploader_from_settings
from logship.monitor import LogMonitor
from settings import Settings, get_logger
from settings.logship import log_shipping_active

log = get_logger(__name__)

_lock = threading.Lock()
# The pid that started the monitor, and the monitor: a forked child sees its parent's entry.
_running: dict[int, LogMonitor] = {}


def monitor_from_settings(settings: Settings) -> LogMonitor | None:
    """The monitor settings ask for, not started; None when shipping is off."""
    account = StorageAccount.from_settings(settings)
    if not log_shipping_active(settings) or account is None or settings.log_dir is None:
        return None
    return LogMonitor(
        settings.log_dir,
        uploader_from_settings(settings, account),
        app_name=settings.app_name,
        host=settings.logs_host_name or socket.gethostname(),
        retention_days=settings.logs_retention_days,
        scan_interval_s=settings.logs_scan_interval_s,
        shutdown_timeout_s=settings.logs_shutdown_timeout_s,
    )


def start_log_shipping(settings: Settings) -> LogMonitor | None:
    """Start this process's monitor (once); None when shipping is off. Never raises: a process
    must run without its log shipping rather than not at all."""
    with _lock:
        if os.getpid() in _running:
            return _running[os.getpid()]
        _running.clear()  # a parent's monitor, whose thread did not survive the fork
        try:
            monitor = monitor_from_settings(settings)
            if monitor is None:
                return None
            _running[os.getpid()] = monitor.start()
        except Exception as error:  # noqa: BLE001 - see the docstring
            log.error("log shipping not started: %s", error)
            return None
        return monitor


def stop_log_shipping() -> list[str]:
    """Stop this process's monitor (final scan, pending uploads up to the shutdown timeout);
    returns the files left. Nothing to do when none was started in this process."""
    with _lock:
        monitor = _running.pop(os.getpid(), None)
    return monitor.stop() if monitor is not None else []
