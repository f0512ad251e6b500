"""Which storage account logs go to and how we sign in: a connection string or Entra ID.

A connection string (``AZURE_STORAGE_CONNECTION_STRING``) wins; otherwise the account URL
(``AZURE_STORAGE_ACCOUNT_URL``, or the older ``account_name``) with ``DefaultAzureCredential``,
created once per process: it caches its tokens, and a new one per upload would ask the identity
endpoint again every time.

Clients are built with the SDK's own retries off (``retry_total=0``): the uploader retries every
attempt itself (tenacity), so an outage is waited out once, not 4 × 16 times.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from settings import Settings

if TYPE_CHECKING:  # the SDK is imported on first use, so a process without shipping stays light
    from azure.storage.blob import BlobServiceClient

# A dead endpoint fails the connect fast; a slow block may take a while on a busy link.
CONNECT_TIMEOUT_SECS = 10
READ_TIMEOUT_SECS = 120
# Files up to this size go in one request; larger ones in blocks of BLOCK_BYTES, several at once.
SINGLE_PUT_BYTES = 4 * 1024 * 1024
BLOCK_BYTES = 4 * 1024 * 1024

_credential_lock = threading.Lock()
_credentials: dict[str, Any] = {}  # at most one entry: the process's credential


def default_credential() -> Any:
    """The process's one ``DefaultAzureCredential`` (made on first use)."""
    with _credential_lock:
        if "default" not in _credentials:
            from azure.identity import DefaultAzureCredential

            _credentials["default"] = DefaultAzureCredential()
        return _credentials["default"]


@dataclass(frozen=True)
class StorageAccount:
    """Where blobs go: a connection string, or an account URL signed in with Entra ID."""

    connection_string: str | None = None
    account_url: str | None = None
    single_put_bytes: int = SINGLE_PUT_BYTES
    block_bytes: int = BLOCK_BYTES

    def __post_init__(self) -> None:
        if not (self.connection_string or self.account_url):
            raise ValueError(
                "no storage account: set AZURE_STORAGE_CONNECTION_STRING or "
                "AZURE_STORAGE_ACCOUNT_URL"
            )

    def __repr__(self) -> str:  # never show the connection string's key
        where = self.account_url or "<connection string>"
        return f"StorageAccount({where})"

    @classmethod
    def from_settings(cls, settings: Settings) -> StorageAccount | None:
        """The configured account, or None when neither setting is present."""
        secret = settings.blob_connection_string
        if secret is not None:
            return cls(connection_string=secret.get_secret_value())
        if settings.blob_account_url:
            return cls(account_url=settings.blob_account_url)
        return None

    @classmethod
    def named(cls, account_name: str) -> StorageAccount:
        """The older constructor's ``account_name``: the public cloud's URL for it."""
        return cls(account_url=f"https://{account_name}.blob.core.windows.net")

    @property
    def credential_setting(self) -> str:
        """The setting to fix when the service refuses us."""
        if self.connection_string:
            return "AZURE_STORAGE_CONNECTION_STRING"
        return "the Entra ID identity's role on AZURE_STORAGE_ACCOUNT_URL"

    def client(self) -> BlobServiceClient:
        """A new service client (callers close it; a failed connection gets a fresh one)."""
        from azure.storage.blob import BlobServiceClient

        options: dict[str, Any] = {
            "retry_total": 0,
            "connection_timeout": CONNECT_TIMEOUT_SECS,
            "read_timeout": READ_TIMEOUT_SECS,
            "max_single_put_size": self.single_put_bytes,
            "max_block_size": self.block_bytes,
        }
        if self.connection_string:
            return BlobServiceClient.from_connection_string(self.connection_string, **options)
        assert self.account_url is not None
        return BlobServiceClient(self.account_url, credential=default_credential(), **options)
