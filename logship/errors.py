"""Errors of log shipping, and the one place Azure SDK errors are mapped to them.

    LogShipError                 an upload did not happen; the message is one line for the log
    ├── TransientUploadError     the service or the network failed; worth another attempt
    ├── PermanentUploadError     retrying cannot help (bad credentials, no such file, refused)
    │   └── BlobConflict         the blob exists with other content (a name used twice)
    └── UploadAbandoned          the uploader stopped before this file's turn came (shutdown)

Messages never carry a credential: they name the setting at fault instead.
"""

from __future__ import annotations

# HTTP statuses worth another attempt: timeouts, throttling and server-side failures.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class LogShipError(Exception):
    """An upload did not happen."""


class TransientUploadError(LogShipError):
    """The network or the service failed; another attempt may succeed."""

    def __init__(self, message: str, *, reconnect: bool = False) -> None:
        super().__init__(message)
        # True when the connection itself failed, so the next attempt needs a fresh client.
        self.reconnect = reconnect


class PermanentUploadError(LogShipError):
    """Retrying cannot help: the message says what to fix."""


class BlobConflict(PermanentUploadError):
    """A blob of that name already holds different content."""


class UploadAbandoned(LogShipError):
    """The uploader was shut down before the file was uploaded."""


def first_line(error: BaseException) -> str:
    """The first line of an error's text (SDK errors append multi-line request details)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def classify(error: Exception, credential_setting: str) -> LogShipError:  # noqa: PLR0911
    """Map an Azure SDK or OS error to a :class:`LogShipError` with a one-line message.

    ``credential_setting`` names the setting that holds the credential, so an authentication
    failure says which one to fix.
    """
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(error, LogShipError):
        return error
    if isinstance(error, (ServiceRequestError, ServiceResponseError)):
        return TransientUploadError(
            f"blob storage unreachable: {first_line(error)}", reconnect=True
        )
    if isinstance(error, ClientAuthenticationError) or (
        isinstance(error, HttpResponseError) and error.status_code in (401, 403)
    ):
        return PermanentUploadError(
            f"blob storage refused our credentials; check {credential_setting} "
            f"({first_line(error)})"
        )
    if isinstance(error, HttpResponseError):
        status = error.status_code or 0
        message = f"blob storage answered {status}: {first_line(error)}"
        if status in RETRYABLE_STATUSES or status == 0:
            return TransientUploadError(message)
        return PermanentUploadError(message)
    if isinstance(error, OSError):
        return PermanentUploadError(f"cannot read the file: {first_line(error)}")
    return PermanentUploadError(f"{type(error).__name__}: {first_line(error)}")
