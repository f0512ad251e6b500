"""Checking an RS256 bearer JWT against published signing keys: the one set of rules behind the
web API's Entra ID tokens (web/auth.py) and ACS's media and callback tokens (voice/acs_auth.py).

A token passes only when: its header names RS256 (checked before any key is fetched), its
signature verifies with the key its ``kid`` names at the JWKS URL (keys cached by PyJWT's
``PyJWKClient`` and fetched again for an unknown ``kid``, as after a rotation), ``exp`` and
``aud`` are present, ``aud`` is one of the accepted audiences, and, when an issuer is given,
``iss`` is present and equal to it. Clocks may differ by CLOCK_SKEW_SECS. Every failure is one
:class:`BearerTokenError` whose message says which rule failed and is safe to send back (never key
material or why a signature did not match).

    verifier = BearerVerifier(jwks_url, audiences=["api://conduit"], issuer=issuer)
    claims = verifier.claims(token)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jwt

# Azure signs with RS256; accepting anything else (none, HS256 keyed with the public key) is how
# JWT checks usually go wrong.
ALLOWED_ALGORITHMS = ["RS256"]
# Key endpoints answer in milliseconds; a hung one must not hold a request for long.
JWKS_FETCH_TIMEOUT_SECS = 5.0
# The issuer's clock and ours may differ a little.
CLOCK_SKEW_SECS = 30


class BearerTokenError(Exception):
    """The token is not acceptable; the message is safe to return to the caller."""


def bearer_token(authorization_header: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None for any other header."""
    scheme, _, value = (authorization_header or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


class BearerVerifier:
    """Checks tokens for ``audiences`` (and ``issuer``, when given) against ``jwks_url``'s keys.
    ``keys_unreachable`` is the message when the keys cannot be fetched."""

    def __init__(
        self,
        jwks_url: str,
        *,
        audiences: Sequence[str],
        issuer: str | None,
        keys_unreachable: str = "Signing keys are unreachable right now; try again shortly.",
    ) -> None:
        self._jwks = jwt.PyJWKClient(jwks_url, timeout=JWKS_FETCH_TIMEOUT_SECS)
        self._audiences = list(audiences)
        self._issuer = issuer
        self._keys_unreachable = keys_unreachable

    def claims(self, token: str) -> dict[str, Any]:
        """The token's claims when it passes every rule; :class:`BearerTokenError` otherwise."""
        try:
            if jwt.get_unverified_header(token).get("alg") not in ALLOWED_ALGORITHMS:
                raise BearerTokenError("Token algorithm is not accepted.")
            signing_key = self._jwks.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                signing_key.key,
                algorithms=ALLOWED_ALGORITHMS,
                audience=self._audiences,
                issuer=self._issuer,
                leeway=CLOCK_SKEW_SECS,
                options={"require": ["exp", "aud"] + (["iss"] if self._issuer else [])},
            )
        except jwt.ExpiredSignatureError:
            raise BearerTokenError("Token expired.") from None
        except jwt.InvalidAudienceError:
            raise BearerTokenError("Token audience is not accepted.") from None
        except jwt.InvalidIssuerError:
            raise BearerTokenError("Token issuer is not accepted.") from None
        except jwt.PyJWKClientConnectionError:
            raise BearerTokenError(self._keys_unreachable) from None
        except (jwt.PyJWKClientError, jwt.InvalidTokenError):
            raise BearerTokenError("Invalid token.") from None
        return claims
