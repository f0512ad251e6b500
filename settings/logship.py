"""Settings of log shipping to Blob Storage (logship/): container, scan interval, upload retries.

Mixed into :class:`settings.config.Settings`; every field is read from the environment there.
Where the logs go is decided by fields that already exist in config.py and are reused here:
``LOG_DIR`` (what is shipped; unset: nothing is), ``AZURE_STORAGE_CONNECTION_STRING`` or
``AZURE_STORAGE_ACCOUNT_URL`` (which account; neither set: shipping is off) and
``APP_LOGS_RETENTION_DAYS`` (how long an uploaded rotated file stays on local disk).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import AliasChoices, BaseModel, Field

if TYPE_CHECKING:
    from settings.config import Settings


class LogShippingSettings(BaseModel):
    # Off switch for a process that has LOG_DIR and a storage account but must not ship (tests,
    # a sidecar that ships instead). On by default: a crashed container should not lose its logs.
    logs_shipping_enabled: bool = Field(
        True, validation_alias=AliasChoices("LOG_SHIPPING_ENABLED", "APP_LOGS_UPLOAD_ENABLED")
    )
    # The older services' container name; blobs land at <container>/<app_name>/<host>/<file>.
    logs_container: str = Field(
        "logs",
        min_length=3,
        max_length=63,
        pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$",
        validation_alias=AliasChoices("LOG_SHIPPING_CONTAINER", "APP_LOGS_CONTAINER"),
    )
    # Files rotate once a day, so a minute between scans ships a day's file within a minute of
    # midnight and costs one directory listing a minute.
    logs_scan_interval_s: float = Field(
        60.0, gt=0, validation_alias=AliasChoices("LOG_SHIPPING_SCAN_INTERVAL_SECONDS")
    )
    # The older uploader's 16 attempts, 1 s first delay, then exponential backoff with jitter,
    # each wait capped at a minute: about ten minutes of outage before a file waits for the next
    # scan instead (it is retried there, so nothing is lost past the cap either).
    logs_upload_attempts: int = Field(
        16, ge=1, le=100, validation_alias=AliasChoices("LOG_SHIPPING_UPLOAD_ATTEMPTS")
    )
    logs_upload_first_delay_s: float = Field(
        1.0, ge=0, validation_alias=AliasChoices("LOG_SHIPPING_RETRY_DELAY_SECONDS")
    )
    logs_upload_max_delay_s: float = Field(
        60.0, gt=0, validation_alias=AliasChoices("LOG_SHIPPING_RETRY_MAX_DELAY_SECONDS")
    )
    # Blocks of a large file sent at once; 4 keeps a day's log quick without starving the process.
    logs_upload_concurrency: int = Field(
        4, ge=1, le=32, validation_alias=AliasChoices("LOG_SHIPPING_UPLOAD_CONCURRENCY")
    )
    # How long a process that stops waits for queued uploads (and the final scan) before it
    # leaves them for the next start; gunicorn and Celery give a stopping process about 30 s.
    logs_shutdown_timeout_s: float = Field(
        20.0, ge=0, validation_alias=AliasChoices("LOG_SHIPPING_SHUTDOWN_TIMEOUT_SECONDS")
    )
    # The <host> part of blob names; unset: the machine's host name (a container's id in Docker).
    logs_host_name: str | None = Field(
        None, validation_alias=AliasChoices("LOG_SHIPPING_HOST_NAME")
    )


def log_shipping_active(settings: Settings) -> bool:
    """True when this process ships its rotated logs: LOG_DIR, a storage account, not switched off.
    The monitor then owns retention (it deletes a file only once uploaded), so the file handler
    must not delete rotated files by count on its own (settings/logs.py)."""
    return bool(
        settings.log_dir
        and settings.logs_shipping_enabled
        and (settings.blob_connection_string is not None or settings.blob_account_url)
    )
