"""Is this request from our ACS resource? Verifies the bearer JWT ACS puts on the media WebSocket
(and on Call Automation callbacks, which carry the same kind of token).

ACS signs with RS256 keys published at ``ACS_JWKS_URL``; the issuer is
``https://acscallautomation.communication.azure.com`` and the audience the ACS resource's
immutable id (``ACS_RESOURCE_ID``). A token passes only when all of these hold and it has not
expired. Every failure is one :class:`AcsAuthError` whose message is safe to return (it says which
rule failed, never key material).

In a request handler::

    claims = AcsTokenVerifier.from_settings(settings).verify(request.headers["Authorization"])

Keys are cached by PyJWT's ``PyJWKClient`` and fetched again when a token names an unknown ``kid``
(a key rotation).
"""

from __future__ import annotations

from typing import Any

import jwt

from settings import Settings

# ACS signs with RS256; accepting anything else (none, HS256 keyed with the public key) is how
# JWT checks usually go wrong.
ALLOWED_ALGORITHMS = ["RS256"]
# ACS's key endpoint answers in milliseconds; a hung one must not hold a socket thread for long.
JWKS_FETCH_TIMEOUT_SECS = 5.0
# ACS's and our clocks may differ a little; its tokens live five minutes.
CLOCK_SKEW_SECS = 30


class AcsAuthError(Exception):
    """The request carries no acceptable ACS token; the message is safe to send back."""


class AcsTokenVerifier:
    """Checks ACS bearer tokens against one resource's audience and ACS's published keys."""

    def __init__(self, *, jwks_url: str, issuer: str, audience: str | None) -> None:
        self._issuer = issuer
        self._audience = audience
        self._jwks = jwt.PyJWKClient(jwks_url, timeout=JWKS_FETCH_TIMEOUT_SECS)

    @classmethod
    def from_settings(cls, settings: Settings) -> AcsTokenVerifier:
        return cls(
            jwks_url=settings.acs_jwks_url,
            issuer=settings.acs_issuer,
            audience=settings.acs_resource_id,
        )

    def verify(self, authorization_header: str | None) -> dict[str, Any]:
        """The token's claims when ``Authorization: Bearer <jwt>`` is a valid ACS token."""
        if self._audience is None:
            raise AcsAuthError(
                "ACS tokens cannot be checked: ACS_RESOURCE_ID (the token audience) is not set."
            )
        scheme, _, token = (authorization_header or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AcsAuthError("Missing credentials: ACS sends 'Authorization: Bearer <token>'.")
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in ALLOWED_ALGORITHMS:
                raise AcsAuthError("Token algorithm is not accepted.")
            signing_key = self._jwks.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                signing_key.key,
                algorithms=ALLOWED_ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                leeway=CLOCK_SKEW_SECS,
                options={"require": ["exp", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise AcsAuthError("Token expired.") from None
        except jwt.InvalidAudienceError:
            raise AcsAuthError("Token audience is not this ACS resource.") from None
        except jwt.InvalidIssuerError:
            raise AcsAuthError("Token issuer is not ACS.") from None
        except jwt.PyJWKClientConnectionError:
            raise AcsAuthError("ACS signing keys are unreachable right now.") from None
        except (jwt.PyJWKClientError, jwt.InvalidTokenError):
            raise AcsAuthError("Invalid token.") from None
        return claims
