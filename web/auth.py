"""Who may call the web app: an Entra ID bearer token, a static API key, or (dev only) anyone.

The older counter accepted only Entra ID access tokens; Conduit keeps that and adds a static key
for callers that have no identity (a cron job, a smoke test):

- ``Authorization: Bearer <JWT>``: settings/bearer.py's rules (as for ACS's tokens): RS256 only,
  signature checked against the keys published at ``AUTH_JWKS_URL`` (cached, refetched when an
  unknown ``kid`` appears, as after a key rotation), ``exp`` required, ``aud`` one of
  ``AUTH_AUDIENCES``, ``iss`` equal to ``AUTH_ISSUER`` when set; and here, the calling
  application (``azp`` in v2 tokens, ``appid`` in v1) equal to ``AUTH_REQUIRED_CLIENT_ID`` when
  set.
- ``X-API-Key: <key>``: compared in constant time with ``AUTH_API_KEY``.
- Browsers cannot put headers on a page load or a WebSocket, so the dashboard and its socket also
  take either credential as an ``access_token`` query parameter.

Every endpoint but the open ones needs one of these; a missing or bad credential is a 401 whose
message says which rule failed, never why a signature did not match in detail. ``AUTH_DISABLED``
(``make run`` sets it) opens everything, and the app logs a warning at start when it does.
"""

from __future__ import annotations

import hmac

from flask import Request

from settings import Settings
from settings.bearer import BearerTokenError, BearerVerifier, bearer_token

# Endpoints anyone may call: the counter's banner and the liveness probe, as before.
OPEN_ENDPOINTS = frozenset({"counter.root", "health.health"})
# Endpoints that check a credential of their own instead: ACS signs the media socket's token and
# every Call Automation callback (voice.acs_auth checks both).
SELF_AUTHENTICATED_ENDPOINTS = frozenset({"media.stream", "calls.callbacks"})
# Endpoints a browser opens directly, which may carry the credential in the query string.
BROWSER_ENDPOINTS = frozenset(
    {"dashboard.page", "dashboard.status_socket", "calls.calls_socket", "calls.call_page"}
)
QUERY_TOKEN_PARAM = "access_token"


class AuthError(Exception):
    """The request carries no acceptable credential; the message is safe to return to the caller."""


class AuthConfigError(RuntimeError):
    """Auth is on but nothing is configured to check credentials against."""


class Authenticator:
    """Checks one request's credential against the configured rules."""

    def __init__(self, settings: Settings) -> None:
        self.disabled = settings.auth_disabled
        self._api_key = (
            settings.auth_api_key.get_secret_value().encode() if settings.auth_api_key else None
        )
        self._issuer = settings.auth_issuer
        self._required_client_id = settings.auth_required_client_id
        self._bearer = (
            BearerVerifier(
                settings.auth_jwks_url, audiences=settings.auth_audiences, issuer=self._issuer
            )
            if settings.auth_jwks_url
            else None
        )
        if not self.disabled and self._bearer is None and self._api_key is None:
            raise AuthConfigError(
                "Auth is on but no credential check is configured: set AUTH_JWKS_URL and "
                "AUTH_AUDIENCES (Entra ID), or AUTH_API_KEY, or AUTH_DISABLED=true for local dev."
            )
        if self._bearer is not None and not settings.auth_audiences:
            raise AuthConfigError(
                "AUTH_JWKS_URL is set but AUTH_AUDIENCES is empty: set the audience(s) your "
                "tokens are issued for (e.g. api://conduit)."
            )

    def config_warnings(self) -> list[str]:
        """What is allowed by this configuration but should not be, one line each, for the log
        at start-up."""
        warnings = []
        if not self.disabled and self._bearer is not None and not self._issuer:
            warnings.append(
                "AUTH_ISSUER is unset: bearer tokens from ANY Entra ID tenant whose audience "
                "matches AUTH_AUDIENCES are accepted. Set AUTH_ISSUER to your tenant's issuer "
                "(https://login.microsoftonline.com/<tenant-id>/v2.0)."
            )
        return warnings

    def authenticate(self, request: Request, endpoint: str | None) -> None:
        """Return when ``request`` may call ``endpoint``; raise :class:`AuthError` otherwise."""
        if self.disabled or endpoint in OPEN_ENDPOINTS or endpoint in SELF_AUTHENTICATED_ENDPOINTS:
            return
        api_key = request.headers.get("X-API-Key")
        bearer = bearer_token(request.headers.get("Authorization"))
        if endpoint in BROWSER_ENDPOINTS and not (api_key or bearer):
            presented = request.args.get(QUERY_TOKEN_PARAM)
            # A JWT is three dot-separated parts; anything else is taken as an API key.
            if presented and presented.count(".") == 2:
                bearer = presented
            else:
                api_key = presented
        if api_key:
            self._check_api_key(api_key)
        elif bearer:
            self._check_jwt(bearer)
        else:
            raise AuthError(
                "Missing credentials: send 'Authorization: Bearer <token>' or 'X-API-Key: <key>'."
            )

    def _check_api_key(self, presented: str) -> None:
        if self._api_key is None or not hmac.compare_digest(presented.encode(), self._api_key):
            raise AuthError("Invalid API key.")

    def _check_jwt(self, token: str) -> None:
        if self._bearer is None:
            raise AuthError("Bearer tokens are not accepted here: no AUTH_JWKS_URL is configured.")
        try:
            claims = self._bearer.claims(token)
        except BearerTokenError as error:
            raise AuthError(str(error)) from None
        client_id = claims.get("azp") or claims.get("appid")
        if self._required_client_id and client_id != self._required_client_id:
            raise AuthError("Token was issued to a client that may not call this API.")
