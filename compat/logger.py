"""``common.logger`` → :mod:`settings.logs`: ``get_logger(name, log_level)`` and ``get_app_name()``.

The first ``get_logger`` call in a process sets logging up from settings (console, JSON lines or
colour, ``LOG_DIR`` files rotated daily, secrets masked), as the older function did on each call;
a process that configured logging itself (every Conduit process does) is left as it is.
"""

from __future__ import annotations

import logging
import threading

from settings import configure_logging, get_settings
from settings.logs import get_logger as _named_logger

_configured = threading.Event()


def get_app_name() -> str:
    """The application's name (``APP_NAME``): the log file's name and the quota's ``app_id``."""
    return get_settings().app_name


def get_logger(name: str, log_level: str | int | None = None) -> logging.Logger:
    """A logger named ``name``; ``log_level`` (``"DEBUG"``, ``logging.INFO`` ...) sets its level,
    else it follows ``LOG_LEVEL``."""
    if not _configured.is_set():
        _configured.set()
        if not logging.getLogger().handlers:
            configure_logging(get_settings())
    logger = _named_logger(name)
    if log_level is not None:
        logger.setLevel(log_level.upper() if isinstance(log_level, str) else log_level)
    return logger
