"""Start Azurite, the Blob Storage emulator, for tests that read blobs (the ``azurite`` fixture in
tests/conftest.py yields its connection string).

Azurite is installed from tools/azurite/package-lock.json by ``make test-tools``. It keeps its
blobs in memory, so nothing lands on disk (``--inMemoryPersistence`` and ``--location`` exclude
each other), and ``--skipApiVersionCheck`` lets it serve an azure-storage-blob newer than itself.
A test that restarts Azurite passes a ``location`` (blobs kept on disk across the restart) and the
``port`` of the first run. Azurite's access log (one line per request) is the log file's content;
:func:`committed_writes` counts from it the writes that created or replaced each blob.
"""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from settings.redis_server import free_port
from tests.support.processes import REPO_ROOT, ManagedProcess

AZURITE_BLOB = REPO_ROOT / "tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's one account and key: published by Microsoft for the emulator, not a secret.
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def node_missing() -> str | None:
    """Why Azurite cannot run here (no Node.js), or None."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} not on PATH: Azurite needs Node.js" if missing else None


def require_node() -> None:
    """Skip the calling test without Node.js on a laptop; fail it on CI, where a skip would hide
    an untested path."""
    import pytest

    missing = node_missing()
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"{missing}; CI must run the blob tests")
    if missing:
        pytest.skip(missing)


def connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT_NAME};"
    )


# An access-log line of a successful write that makes a blob: Put Blob, or Put Block List.
_COMMIT = re.compile(
    rf'"PUT /{ACCOUNT_NAME}/(?P<path>[^?" ]+/[^?" ]+)(?:\?comp=blocklist)? HTTP/[0-9.]+" 201 '
)


def committed_writes(access_log: str) -> Counter[str]:
    """``container/blob`` → how many times it was written (created or overwritten)."""
    return Counter(match["path"] for match in _COMMIT.finditer(access_log))


@dataclass(frozen=True)
class AzuriteServer:
    """A running Azurite: its connection string and the file its access log goes to."""

    connection_string: str
    log_path: Path

    def committed_writes(self) -> Counter[str]:
        return committed_writes(self.log_path.read_text(errors="replace"))


@contextmanager
def running_azurite(
    log_dir: Path, port: int | None = None, location: Path | None = None
) -> Iterator[str]:
    """An Azurite blob service on ``port`` (default: a free one) until the block ends; yields
    its connection string. Blobs live in memory, or under ``location`` when one is given."""
    from azure.storage.blob import BlobServiceClient

    if not AZURITE_BLOB.exists():
        raise RuntimeError(
            f"Azurite is not installed ({AZURITE_BLOB} is missing): run "
            "`make test-tools`, or `npm ci` in tools/azurite"
        )
    port = port or free_port()
    connection = connection_string(port)
    # No retries: a readiness probe that fails should fail fast and be asked again.
    probe = BlobServiceClient.from_connection_string(connection, retry_total=0)

    def answers() -> bool:
        probe.get_service_properties()
        return True

    args = [
        str(AZURITE_BLOB),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        *(["--location", str(location)] if location else ["--inMemoryPersistence"]),
        "--skipApiVersionCheck",
        "--disableTelemetry",
    ]
    azurite = ManagedProcess(
        args, dict(os.environ), log_dir / "azurite.log", ready=answers, name="azurite"
    )
    # Stopped in `finally`, not by the context manager: one that never became ready is stopped too.
    try:
        azurite.start()
        yield connection
    finally:
        azurite.stop()
        probe.close()
