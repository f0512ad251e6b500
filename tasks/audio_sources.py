"""Where a message's audio comes from: a local path, a blob URL, or the bytes in base64.

Each source ends as a local file the transcription can validate and read. Blob URLs are read
with ``azure-storage-blob``: a SAS in the URL is used as is; otherwise the account key from
AZURE_STORAGE_CONNECTION_STRING, or Entra ID (managed identity) when that is unset. Plain
``http://`` is accepted only for a loopback host (Azurite in development).
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from settings import get_settings
from tasks.audio_files import MAX_UPLOAD_BYTES, validate_audio_file
from tasks.errors import InvalidInput, PermanentError, TransientError

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _blob_credential(url: str) -> Any:
    if "sig=" in (urlparse(url).query or ""):
        return None  # the SAS token in the URL is the credential
    connection_string = get_settings().blob_connection_string
    if connection_string is None:
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()
    parts = dict(part.split("=", 1) for part in connection_string.get_secret_value().split(";")
                 if "=" in part)
    if "AccountKey" not in parts:
        raise PermanentError("AZURE_STORAGE_CONNECTION_STRING has no AccountKey to read "
                             "blobs with; use a SAS URL or an account-key connection string")
    return {"account_name": parts["AccountName"], "account_key": parts["AccountKey"]}


def download_blob(url: str, destination: Path) -> Path:
    """The blob at ``url`` saved as ``destination`` (refused before download when too large)."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
    )
    from azure.storage.blob import BlobClient

    parsed = urlparse(url)
    if parsed.scheme != "https" and not (parsed.scheme == "http"
                                         and parsed.hostname in LOOPBACK_HOSTS):
        raise InvalidInput(f"audio_url {url!r} must be an https:// blob URL")
    try:
        with BlobClient.from_blob_url(url, credential=_blob_credential(url)) as blob:
            size = blob.get_blob_properties().size
            if size > MAX_UPLOAD_BYTES:
                raise InvalidInput(f"audio_url blob is {size / 2**20:.1f} MB; Whisper accepts at "
                                   f"most {MAX_UPLOAD_BYTES // 2**20} MB")
            with destination.open("wb") as file:
                blob.download_blob().readinto(file)
    except ResourceNotFoundError:
        raise InvalidInput(f"audio_url {url!r}: no such blob") from None
    except ClientAuthenticationError as error:
        raise PermanentError(f"audio_url {url!r}: access denied ({error.message}); check "
                             "AZURE_STORAGE_CONNECTION_STRING or the SAS") from None
    except ServiceRequestError as error:
        raise TransientError(f"cannot reach blob storage for {url!r}: {error}") from error
    except HttpResponseError as error:
        raise PermanentError(f"audio_url {url!r}: blob storage answered {error.status_code}: "
                             f"{error.message}") from None
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
        return validate_audio_file(path)
    name = Path(filename or urlparse(url or "").path).name
    if not name:
        raise InvalidInput("filename is required with audio_base64: its extension says the "
                           "format (for example 'call.mp3')")
    destination = work_dir / name
    if url is not None:
        download_blob(url, destination)
    else:
        decode_base64(base64_data or "", destination)
    return validate_audio_file(destination)
