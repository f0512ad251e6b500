"""Which files in a log directory are rotated, what their blobs are called, when they expire.

No I/O here: the monitor lists the directory and hands the names and times to these functions.

``settings/logs.py`` rotates ``<app>.log`` at midnight into ``<app>.YYYY-MM-DD.log``; the standard
library's own naming (``<app>.log.YYYY-MM-DD``, what the older services left) is recognised too, so
a directory written by an older service ships as well. Anything without a date in its name is an
active file (or not a log at all) and is never touched.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

# <stem>.<date>[_HH-MM[-SS]].<ext>  (settings/logs.py's rotated_name) or <name>.<ext>.<date>[...]
_DATE = r"(?P<date>\d{4}-\d{2}-\d{2})(?:_\d{2}-\d{2}(?:-\d{2})?)?"
_ROTATED = (
    re.compile(rf"^(?P<stem>.+)\.{_DATE}\.(?P<ext>[A-Za-z0-9]+)$"),
    re.compile(rf"^(?P<stem>.+)\.(?P<ext>[A-Za-z0-9]+)\.{_DATE}$"),
)
# Blob names: path segments may hold these; anything else in an app or host name becomes "-".
_UNSAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class RotatedFile:
    """A rotated log file as found in the directory."""

    name: str
    day: dt.date  # the day the file's lines were written
    mtime: float
    size: int


def rotated_day(name: str) -> dt.date | None:
    """The day a rotated file covers, or None when ``name`` is not a rotated log file."""
    for pattern in _ROTATED:
        match = pattern.match(name)
        if match:
            try:
                return dt.date.fromisoformat(match["date"])
            except ValueError:
                return None
    return None


def upload_order(files: list[RotatedFile]) -> list[RotatedFile]:
    """Oldest first (by the day, then the modification time), so a reader sees days in order."""
    return sorted(files, key=lambda f: (f.day, f.mtime, f.name))


def segment(text: str) -> str:
    """``text`` made safe as one segment of a blob name (no slashes, no spaces)."""
    cleaned = _UNSAFE_SEGMENT.sub("-", text).strip("-.")
    return cleaned or "unnamed"


def blob_name(app_name: str, host: str, file_name: str) -> str:
    """``<app_name>/<host>/<file>``: one folder per app, one per host, as the issue lays out."""
    return f"{segment(app_name)}/{segment(host)}/{file_name}"


def conflict_blob_name(name: str, md5_hex: str) -> str:
    """A second name for a file whose first name holds different content (a file rotated twice
    to the same date after a restart): the content's hash goes before the extension."""
    folder, _, file_name = name.rpartition("/")
    stem, dot, ext = file_name.rpartition(".")
    renamed = f"{stem}.{md5_hex[:12]}.{ext}" if dot else f"{file_name}.{md5_hex[:12]}"
    return f"{folder}/{renamed}" if folder else renamed


def expired(day: dt.date, today: dt.date, retention_days: int) -> bool:
    """True when a file of ``day`` is past the retention on ``today`` (kept ``retention_days``
    full days, as the file handler's ``backupCount`` keeps that many files)."""
    return (today - day).days > retention_days
