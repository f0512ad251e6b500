"""The RS256 tokens ACS puts on its callbacks and media socket, made and published locally.

One RSA key per emulator directory, kept across restarts (so a Conduit that cached the JWKS keeps
working); its public half is served as a JWKS at ``/calling/keys``, as ACS serves its own.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://acscallautomation.communication.azure.com"
# ACS's tokens live five minutes; a new one comes with every event.
TOKEN_LIFETIME_SECS = 300
KEY_FILE = "jwt-signing-key.pem"


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class TokenIssuer:
    """Signs ACS-shaped JWTs for one audience (the ACS resource id) and publishes the key."""

    def __init__(self, directory: Path, audience: str) -> None:
        self.audience = audience
        path = directory / KEY_FILE
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            assert isinstance(key, rsa.RSAPrivateKey)
        else:
            directory.mkdir(parents=True, exist_ok=True)
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            path.chmod(0o600)
        self._key = key
        numbers = key.public_key().public_numbers()
        self._public = {"kty": "RSA", "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e)}
        self.kid = hashlib.sha256(self._public["n"].encode()).hexdigest()[:16]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**self._public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def token(self, lifetime_s: float = TOKEN_LIFETIME_SECS, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + int(lifetime_s),
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode(payload, self._key, algorithm="RS256", headers={"kid": self.kid})
