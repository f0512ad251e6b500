"""Is this request from our ACS resource? Verifies the bearer JWT ACS puts on the media WebSocket
(and on Call Automation callbacks, which carry the same kind of token).

ACS signs with RS256 keys published at ``ACS_JWKS_URL``; the issuer is
``https://acscallautomation.communication.azure.com`` and the audience the ACS resource's
immutable id (``ACS_RESOURCE_ID``). A token passes only when all of these hold and it has not
expired (settings/bearer.py's rules, the web API's too). Every failure is one
:class:`AcsAuthError` whose message is safe to return (it says which rule failed, never key
material).

In a request handler::

    claims = AcsTokenVerifier.from_settings(settings).verify(request.headers["Authorization"])
"""

from __future__ import annotations

from typing import Any

from settings import Settings
from settings.bearer import BearerTokenError, BearerVerifier, bearer_token


class AcsAuthError(Exception):
    """The request carries no acceptable ACS token; the message is safe to send back."""


class AcsTokenVerifier:
    """Checks ACS bearer tokens against one resource's audience and ACS's published keys."""

    def __init__(self, *, jwks_url: str, issuer: str, audience: str | None) -> None:
        self._audience = audience
        self._bearer = BearerVerifier(
            jwks_url,
            audiences=[audience] if audience else [],
            issuer=issuer,
            keys_unreachable="ACS signing keys are unreachable right now.",
        )

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
        token = bearer_token(authorization_header)
        if token is None:
            raise AcsAuthError("Missing credentials: ACS sends 'Authorization: Bearer <token>'.")
        try:
            return self._bearer.claims(token)
        except BearerTokenError as error:
            raise AcsAuthError(str(error)) from None
