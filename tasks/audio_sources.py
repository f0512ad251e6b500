"""Where a message's audio comes from: a local path, a blob URL, or the bytes in base64.

Each source ends as a local file the transcription can validate and read. A message is input
from another service, so what it may make a worker touch is bounded:

- ``audio_path`` only inside ``AUDIO_LOCAL_ROOT`` (unset: refused).
- ``audio_url`` with a SAS token: any Azure blob host (``*.blob.core.windows.net``), read with
  the token alone. Without one: only the configured account (the connection string's, or
  ``AZURE_STORAGE_ACCOUNT_URL``), read with its key or Entra ID. Our credentials, an Entra token
  good for every account this identity can read, are never sent to a host a message chose.
- ``https://`` only, except under the configured BlobEndpoint (Azurite serves ``http://``).
- One parse decides: the URL is parsed once with urllib3's parser, the one the Azure SDK's
  HTTP transport (requests) connects with, and refused when it has a backslash, userinfo
  (``user@``), whitespace or control characters, or when Python's ``urlparse`` reads a
  different host from it (``https://127.0.0.1:1\\@x.blob.core.windows.net/`` names an Azure
  host to one parser and 127.0.0.1 to the other). The blob client is then built from that
  parse, the host it will connect to is checked again before the first request, and redirects
  are not followed (a redirect would take the request, and our account's signature, elsewhere).

Errors name the URL with its SAS signature redacted: they end in logs and in the failure
payload on the output queue.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from urllib3.exceptions import LocationParseError
from urllib3.util import Url, parse_url

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


# Characters no blob URL needs and URL parsers disagree about (WHATWG turns ``\\`` into ``/``).
_AMBIGUOUS = re.compile(r"[\\\s\x00-\x1f\x7f]")
DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True)
class BlobUrl:
    """An audio_url as the HTTP client will see it: one parse, every part checked."""

    url: str  # rebuilt from the parts below: what the blob client is given
    scheme: str
    host: str
    port: int
    path: str
    query: str

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


def parse_blob_url(url: str, field: str = "audio_url") -> BlobUrl:
    """``url`` parsed as the SDK's transport parses it; InvalidInput when it is ambiguous."""
    shown = _redacted(url)
    if _AMBIGUOUS.search(url):
        raise InvalidInput(
            f"{field} {shown!r} has a backslash, whitespace or control character; "
            "send the URL as Azure gives it"
        )
    try:
        parsed: Url = parse_url(url)
    except LocationParseError:
        raise InvalidInput(f"{field} {shown!r} is not a valid URL") from None
    if parsed.auth is not None or "@" in (urlparse(url).netloc or ""):
        raise InvalidInput(f"{field} {shown!r} has userinfo (user@host); blob URLs have none")
    scheme = (parsed.scheme or "").lower()
    host = (parsed.host or "").lower()
    if scheme not in DEFAULT_PORTS or not host:
        raise InvalidInput(f"{field} {shown!r} must be an https:// blob URL")
    if (urlparse(url).hostname or "").lower() != host.strip("[]"):
        raise InvalidInput(f"{field} {shown!r} names two different hosts to two URL parsers")
    port = parsed.port or DEFAULT_PORTS[scheme]
    netloc = host if parsed.port is None else f"{host}:{parsed.port}"
    path, query = parsed.path or "/", parsed.query or ""
    rebuilt = f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")
    return BlobUrl(rebuilt, scheme, host, port, path, query)


def _under(blob: BlobUrl, endpoint: str | None) -> bool:
    if not endpoint:
        return False
    base = parse_blob_url(endpoint, "the configured blob endpoint")
    return blob.origin == base.origin and blob.path.startswith(base.path.rstrip("/") + "/")


def _blob_credential(url: str | BlobUrl, account: dict[str, str] | None) -> Any:
    """The credential to read ``url`` with, after checking the URL may be read at all."""
    parsed = url if isinstance(url, BlobUrl) else parse_blob_url(url)
    url = parsed.url
    on_our_account = _under(parsed, _configured_account(account))
    if parsed.scheme != "https" and not (parsed.scheme == "http" and on_our_account):
        raise InvalidInput(f"audio_url {_redacted(url)!r} must be an https:// blob URL")
    if "sig=" in parsed.query:
        if not (on_our_account or parsed.host.endswith(AZURE_BLOB_HOST_SUFFIX)):
            raise InvalidInput(f"audio_url {_redacted(url)!r} is not an Azure blob URL")
        return None  # the SAS token in the URL is the credential
    if not on_our_account:
        raise InvalidInput(
            f"audio_url {_redacted(url)!r} is not on the configured storage "
            "account; give a SAS URL, or set AZURE_STORAGE_CONNECTION_STRING / "
            "AZURE_STORAGE_ACCOUNT_URL to that account"
        )
    if account is None:
        from azure.identity import DefaultAzureCredential  # noqa: PLC0415 - heavy SDK, blob only

        return DefaultAzureCredential()
    if "AccountKey" not in account:
        raise PermanentError(
            "AZURE_STORAGE_CONNECTION_STRING has no AccountKey to read "
            "blobs with; use a SAS URL or an account-key connection string"
        )
    return {"account_name": account["AccountName"], "account_key": account["AccountKey"]}


def local_audio_path(path: str | Path) -> Path:
    """``path`` if it lies inside AUDIO_LOCAL_ROOT (symlinks resolved); else InvalidInput."""
    root = get_settings().audio_local_root
    if root is None:
        raise InvalidInput(
            "local audio paths (audio_path, ai.transcribe_audio's path) are not accepted here: "
            "set AUDIO_LOCAL_ROOT to the directory tasks and messages may read audio from, or "
            "send audio_url or audio_base64"
        )
    resolved, allowed = Path(path).resolve(), Path(root).resolve()
    if not resolved.is_relative_to(allowed):
        raise InvalidInput(f"audio path {str(path)!r} is outside AUDIO_LOCAL_ROOT")
    return resolved


def download_blob(url: str, destination: Path) -> Path:
    """The blob at ``url`` saved as ``destination`` (refused before download when too large)."""
    from azure.core.exceptions import (  # noqa: PLC0415 - heavy SDK, blob only
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
    )
    from azure.storage.blob import BlobClient  # noqa: PLC0415 - heavy SDK, blob only

    parsed = parse_blob_url(url)
    credential = _blob_credential(parsed, _connection_string())
    shown = _redacted(parsed.url)
    try:
        # No redirects: the host checked is the only one the request (and, on our account, its
        # signed credential) goes to.
        with BlobClient.from_blob_url(
            parsed.url, credential=credential, permit_redirects=False
        ) as blob:
            # What the client will connect to, read back from it: the host that was checked.
            connects_to = parse_url(blob.url)
            if (connects_to.host, connects_to.port or DEFAULT_PORTS[parsed.scheme]) != (
                parsed.host,
                parsed.port,
            ):
                raise InvalidInput(f"audio_url {shown!r} would connect to another host")
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
        return validate_audio_file(local_audio_path(path))
    name = Path(filename or (parse_blob_url(url).path if url else "")).name
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
