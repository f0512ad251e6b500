"""Start Azurite, the Blob Storage emulator, for tests that read blobs (the ``azurite`` fixture in
tests/conftest.py yields its connection string).

Azurite is installed from tools/azurite/package-lock.json by ``make test-tools``. It keeps its
blobs in memory, so nothing lands on disk (``--inMemoryPersistence`` and ``--location`` exclude
each other), and ``--skipApiVersionCheck`` lets it serve an azure-storage-blob newer than itself.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
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


def connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT_NAME};"
    )


@contextmanager
def running_azurite(log_dir: Path) -> Iterator[str]:
    """An Azurite blob service on a free port until the block ends; yields its connection string."""
    from azure.storage.blob import BlobServiceClient

    if not AZURITE_BLOB.exists():
        raise RuntimeError(
            f"Azurite is not installed ({AZURITE_BLOB} is missing): run "
            "`make test-tools`, or `npm ci` in tools/azurite"
        )
    port = free_port()
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
        "--inMemoryPersistence",
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
