"""ACS's HMAC-SHA256 request signature, checked as the service checks it (no I/O here).

The SDK signs ``VERB\\n<path?query>\\n<x-ms-date>;<host>;<x-ms-content-sha256>`` with the
base64-decoded access key and sends ``Authorization: HMAC-SHA256
SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=<base64>``. The service also checks
that the body hashes to the content header and that the date is recent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

SIGNED_HEADERS = "x-ms-date;host;x-ms-content-sha256"
# ACS refuses requests signed more than a few minutes away from its clock.
MAX_CLOCK_SKEW_SECS = 300


class HmacError(Exception):
    """The request's signature is missing or wrong; the message says which part."""


def content_hash(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


def signature(access_key: str, string_to_sign: str) -> str:
    secret = base64.b64decode(access_key)
    digest = hmac.new(secret, string_to_sign.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def sign(
    access_key: str, method: str, path_and_query: str, *, host: str, body: bytes, date: str
) -> dict[str, str]:
    """The headers the SDK adds (for tests and for clients other than the SDK)."""
    digest = content_hash(body)
    to_sign = f"{method.upper()}\n{path_and_query}\n{date};{host};{digest}"
    return {
        "x-ms-date": date,
        "x-ms-content-sha256": digest,
        "Authorization": f"HMAC-SHA256 SignedHeaders={SIGNED_HEADERS}"
        f"&Signature={signature(access_key, to_sign)}",
    }


def verify(
    access_key: str,
    method: str,
    path_and_query: str,
    *,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime | None = None,
) -> None:
    """Return when the request is signed with ``access_key``; raise :class:`HmacError` if not."""
    headers = {name.lower(): value for name, value in headers.items()}
    authorization = headers.get("authorization", "")
    scheme, _, parameters = authorization.partition(" ")
    if scheme != "HMAC-SHA256":
        raise HmacError("Authorization must be 'HMAC-SHA256 SignedHeaders=...&Signature=...'")
    fields = dict(part.partition("=")[::2] for part in parameters.split("&"))
    if fields.get("SignedHeaders") != SIGNED_HEADERS:
        raise HmacError(f"SignedHeaders must be {SIGNED_HEADERS}")
    date = headers.get("x-ms-date", "")
    digest = headers.get("x-ms-content-sha256", "")
    host = headers.get("host", "")
    if not (date and digest and host):
        raise HmacError("x-ms-date, x-ms-content-sha256 and Host are required")
    try:
        signed_at = parsedate_to_datetime(date)
    except (TypeError, ValueError):
        raise HmacError("x-ms-date is not an RFC 1123 date") from None
    skew = abs(((now or datetime.now(UTC)) - signed_at).total_seconds())
    if skew > MAX_CLOCK_SKEW_SECS:
        raise HmacError("x-ms-date is too far from the server's clock")
    if not hmac.compare_digest(digest, content_hash(body)):
        raise HmacError("x-ms-content-sha256 does not match the body")
    expected = signature(access_key, f"{method.upper()}\n{path_and_query}\n{date};{host};{digest}")
    # Signature= may itself end in '=' padding: take everything after the first 'Signature='.
    presented = parameters.partition("Signature=")[2]
    if not hmac.compare_digest(presented, expected):
        raise HmacError("Signature does not match (wrong access key?)")
