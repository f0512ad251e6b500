"""Reading shipped logs back: list an app's log blobs, download one and check it is whole.

    for entry in list_logs(account, "logs", prefix="web/"):     # by host, then day
        print(entry.name, entry.size)
    download_log(account, "logs", "web/host-1/web.2026-11-27.log", Path("web.log"))

A download is checked against the Content-MD5 the uploader stored, so a damaged copy is an
error rather than a silently wrong log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from logship.account import StorageAccount
from logship.errors import LogShipError, classify


@dataclass(frozen=True)
class LogBlob:
    name: str
    size: int
    last_modified: datetime
    md5_hex: str | None


def list_logs(account: StorageAccount, container: str, prefix: str = "") -> Iterator[LogBlob]:
    """The log blobs under ``prefix`` (``<app>/`` or ``<app>/<host>/``) in name order: by app,
    host, then day, since rotated names carry the date."""
    try:
        with account.client() as service:
            blobs = service.get_container_client(container).list_blobs(name_starts_with=prefix)
            for blob in blobs:
                md5 = blob.content_settings.content_md5
                yield LogBlob(
                    blob.name, blob.size, blob.last_modified, bytes(md5).hex() if md5 else None
                )
    except LogShipError:
        raise
    except Exception as error:  # noqa: BLE001 - mapped to one line, as everywhere in logship
        raise classify(error, account.credential_setting) from None


def download_log(account: StorageAccount, container: str, name: str, destination: Path) -> int:
    """Save the blob ``name`` as ``destination``; its size. Raises :class:`LogShipError` when the
    content does not match the stored MD5 (the partial file is removed)."""
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    try:
        with account.client() as service:
            blob = service.get_blob_client(container, name)
            stream = blob.download_blob()
            stored = stream.properties.content_settings.content_md5
            with destination.open("wb") as file:
                for chunk in stream.chunks():
                    digest.update(chunk)
                    file.write(chunk)
                    size += len(chunk)
    except Exception as error:  # noqa: BLE001 - mapped to one line, as everywhere in logship
        destination.unlink(missing_ok=True)
        raise classify(error, account.credential_setting) from None
    if stored and bytes(stored) != digest.digest():
        destination.unlink(missing_ok=True)
        raise LogShipError(f"{name}: the downloaded content does not match its Content-MD5")
    return size
