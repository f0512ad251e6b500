"""Where a message's audio comes from: a local path, a blob URL, or the bytes in base64.

Each source ends as a local file the transcription can validate and read. A message is input
from another service, so what it may make a worker touch is bounded:

- ``audio_path`` only inside ``AUDIO_LOCAL_ROOT`` (unset: refused).
- ``audio_url`` with a SAS token: any Azure blob host (``*.blob.core.windows.net``), read with
  the token alone. Without one: only the configured account (the connection string's, or
  ``AZURE_STORAGE_ACCOUNT_URL``), read with its key or Entra ID. Our credentials, an Entra token
  good for every account this identity can read, are never sent to a host a message chose.
- ``https://`` only, except under the configured BlobEndpoint (Azurite serves ``http://``).

Errors name the URL with its SAS signature redacted: they end in logs and in the failure
payload on the output queue.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from settings import get_settings
from tasks.audio_files import MAX_UPLOAD_BYTES, validate_audio_file
from tasks.errors import InvalidInput, PermanentError, TransientError

# Azure Storage's public blob endpoints; a SAS URL elsewhere is not a blob we should fetch.
AZURE_BLOB_HOST_SUFFIX = ".blob.core.windows.net"
# A SAS token's signature, in a URL or in an error text that quotes one.
_SAS_SIGNATURE = re.compile(r"(sig=)[^&\s'\"]+", re.IGNORECASE)


def _redacted(text: str) -> str:
    return _SAS_SIGNATURE.sub(r"\1REDACTED", text)


def _connection_string() -> dict[str, str] | None:
    """AZURE_STORAGE_CONNECTION_STRING's ``key=value`` parts, when it is set."""
    connection_string = get_settings().blob_connection_string
    if connection_string is None:
        return None
    return dict(
        part.split("=", 1)
        for part in connection_string.get_secret_value().split(";")
        if "=" in part
    )


def _configured_account(account: dict[str, str] | None) -> str | None:
    """The blob endpoint our credentials belong to, as ``scheme://host/path``."""
    if account is not None:
        return account.get("BlobEndpoint") or (
            f"https://{account['AccountName']}.blob.core.windows.net"
            if "AccountName" in account
            else None
        )
    return get_settings().blob_account_url


def _under(url: str, endpoint: str | None) -> bool:
    if not endpoint:
        return False
    parsed, base = urlparse(url), urlparse(endpoint)
    return (parsed.scheme, parsed.netloc) == (base.scheme, base.netloc) and parsed.path.startswith(
        base.path.rstrip("/") + "/"
    )


def _blob_credential(url: str, account: dict[str, str] | None) -> Any:
    """The credential to read ``url`` with, after checking the URL may be read at all."""
    parsed = urlparse(url)
    on_our_account = _under(url, _configured_account(account))
    if parsed.scheme != "https" and not (parsed.scheme == "http" and on_our_account):
        raise InvalidInput(f"audio_url {_redacted(url)!r} must be an https:// blob URL")
    if "sig=" in (parsed.query or ""):
        if not (on_our_account or (parsed.hostname or "").endswith(AZURE_BLOB_HOST_SUFFIX)):
            raise InvalidInput(f"audio_url {_redacted(url)!r} is not an Azure blob URL")
        return None  # the SAS token in the URL is the credential
    if not on_our_account:
        raise InvalidInput(
            f"audio_url {_redacted(url)!r} is not on the configured storage "
            "account; give a SAS URL, or set AZURE_STORAGE_CONNECTION_STRING / "
            "AZURE_STORAGE_ACCOUNT_URL to that account"
        )
    if account is None:
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()
    if "AccountKey" not in account:
        raise PermanentError(
            "AZURE_STORAGE_CONNECTION_STRING has no AccountKey to read "
            "blobs with; use a SAS URL or an account-key connection string"
        )
    return {"account_name": account["AccountName"], "account_key": account["AccountKey"]}


def _local_path(path: str) -> Path:
    """``path`` if it lies inside AUDIO_LOCAL_ROOT (symlinks resolved); else InvalidInput."""
    root = get_settings().audio_local_root
    if root is None:
        raise InvalidInput(
            "audio_path is not accepted here: set AUDIO_LOCAL_ROOT to the "
            "directory messages may read audio from, or send audio_url or "
            "audio_base64"
        )
    resolved, allowed = Path(path).resolve(), Path(root).resolve()
    if not resolved.is_relative_to(allowed):
        raise InvalidInput(f"audio_path {path!r} is outside AUDIO_LOCAL_ROOT")
    return resolved


def download_blob(url: str, destination: Path) -> Path:
    """The blob at ``url`` saved as ``destination`` (refused before download when too large)."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
    )
    from azure.storage.blob import BlobClient

    credential = _blob_credential(url, _connection_string())
    shown = _redacted(url)
    try:
        with BlobClient.from_blob_url(url, credential=credential) as blob:
            size = blob.get_blob_properties().size
            if size > MAX_UPLOAD_BYTES:
                raise InvalidInput(
                    f"audio_url blob is {size / 2**20:.1f} MB; Whisper accepts at "
                    f"most {MAX_UPLOAD_BYTES // 2**20} MB"
                )
            with destination.open("wb") as file:
                blob.download_blob().readinto(file)
    except ResourceNotFoundError:
        raise InvalidInput(f"audio_url {shown!r}: no such blob") from None
    except ClientAuthenticationError as error:
        raise PermanentError(
            f"audio_url {shown!r}: access denied "
            f"({_redacted(str(error.message))}); check "
            "AZURE_STORAGE_CONNECTION_STRING or the SAS"
        ) from None
    except ServiceRequestError as error:
        # `from None` here too: the SDK's error chained in would quote the URL, SAS and all.
        raise TransientError(
            f"cannot reach blob storage for {shown!r}: {_redacted(str(error))}"
        ) from None
    except HttpResponseError as error:
        raise PermanentError(
            f"audio_url {shown!r}: blob storage answered {error.status_code}: "
            f"{_redacted(str(error.message))}"
        ) from None
    return destination


def decode_base64(data: str, destination: Path) -> Path:
    """The base64 audio in ``data`` saved as ``destination`` (its name gives the format)."""
    if len(data) * 3 // 4 > MAX_UPLOAD_BYTES:
        raise InvalidInput(f"audio_base64 decodes to more than {MAX_UPLOAD_BYTES // 2**20} MB")
    try:
        destination.write_bytes(base64.b64decode(data, validate=True))
    except binascii.Error as error:
        raise InvalidInput(f"audio_base64 is not valid base64: {error}") from None
    return destination


def local_audio(
    work_dir: Path,
    *,
    path: str | None = None,
    url: str | None = None,
    base64_data: str | None = None,
    filename: str | None = None,
) -> Path:
    """The audio of one of the three sources as a validated local file (under ``work_dir`` when
    it had to be fetched or decoded)."""
    if path is not None:
        return validate_audio_file(_local_path(path))
    name = Path(filename or urlparse(url or "").path).name
    if not name:
        raise InvalidInput(
            "filename is required with audio_base64: its extension says the "
            "format (for example 'call.mp3')"
        )
    destination = work_dir / name
    if url is not None:
        download_blob(url, destination)
    else:
        decode_base64(base64_data or "", destination)
    return validate_audio_file(destination)
