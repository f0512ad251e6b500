"""Auth: Entra-ID-style RS256 tokens checked against a JWKS served over real HTTP, API keys,
the open endpoints, and AUTH_DISABLED. Keys are generated here; nothing leaves 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from settings import load_settings
from tests.support.jwks import new_rsa_key, serve_jwks
from web.app import create_app
from web.auth import AuthConfigError

AUDIENCE = "api://conduit"
ISSUER = "https://login.microsoftonline.com/tenant-1/v2.0"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
PROTECTED = "/status"


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return new_rsa_key()


@pytest.fixture(scope="module")
def jwks_url(signing_key: rsa.RSAPrivateKey) -> Iterator[str]:
    """A JWKS endpoint on 127.0.0.1 publishing the public half of ``signing_key`` as kid k1."""
    with serve_jwks(signing_key, kid="k1") as url:
        yield url


def token(key: rsa.RSAPrivateKey, kid: str = "k1", **overrides: object) -> str:
    now = int(time.time())
    claims = {
        "aud": AUDIENCE,
        "iss": ISSUER,
        "azp": CLIENT_ID,
        "sub": "svc",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        **overrides,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def client(redis_url: str, jwks_url: str):
    settings = load_settings(
        auth_jwks_url=jwks_url,
        auth_audiences=[AUDIENCE],
        auth_issuer=ISSUER,
        auth_required_client_id=CLIENT_ID,
        auth_api_key="static-key-for-tests",
    )
    with create_app(settings).test_client() as test_client:
        yield test_client


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def test_valid_token_is_accepted(client, signing_key) -> None:
    response = client.get(PROTECTED, headers=bearer(token(signing_key)))
    assert response.status_code == 200, response.json


def test_v1_token_with_appid_claim_is_accepted(client, signing_key) -> None:
    v1 = token(signing_key, azp=None, appid=CLIENT_ID)
    assert client.get(PROTECTED, headers=bearer(v1)).status_code == 200


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"exp": int(time.time()) - 3600}, "Token expired."),
        ({"aud": "api://someone-else"}, "Token audience is not accepted."),
        ({"iss": "https://sts.windows.net/other-tenant/"}, "Token issuer is not accepted."),
        ({"azp": "another-client"}, "Token was issued to a client that may not call this API."),
    ],
    ids=["expired", "wrong-audience", "wrong-issuer", "wrong-client"],
)
def test_bad_claims_are_refused(client, signing_key, claims, detail) -> None:
    response = client.get(PROTECTED, headers=bearer(token(signing_key, **claims)))
    assert response.status_code == 401
    assert response.json == {"detail": detail}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_token_signed_by_another_key_is_refused(client) -> None:
    response = client.get(PROTECTED, headers=bearer(token(new_rsa_key())))
    assert response.status_code == 401
    assert response.json == {"detail": "Invalid token."}


def test_unknown_kid_is_refused(client) -> None:
    response = client.get(PROTECTED, headers=bearer(token(new_rsa_key(), kid="rotated-away")))
    assert response.status_code == 401


def test_alg_none_is_refused(client) -> None:
    now = int(time.time())
    unsigned = jwt.encode(
        {"aud": AUDIENCE, "iss": ISSUER, "azp": CLIENT_ID, "exp": now + 600},
        "",  # no key: PyJWT's "none" algorithm takes only an empty one
        algorithm="none",
        headers={"kid": "k1"},
    )
    assert client.get(PROTECTED, headers=bearer(unsigned)).status_code == 401


def test_hs256_signed_with_the_public_key_is_refused(client, signing_key) -> None:
    # The classic confusion attack: the public key used as an HMAC secret. PyJWT will not even
    # sign such a token, so it is put together by hand.
    def part(data: dict) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=")

    public_pem = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {"aud": AUDIENCE, "iss": ISSUER, "azp": CLIENT_ID, "exp": int(time.time()) + 600}
    signed = part({"alg": "HS256", "typ": "JWT", "kid": "k1"}) + b"." + part(claims)
    signature = base64.urlsafe_b64encode(
        hmac.new(public_pem, signed, hashlib.sha256).digest()
    ).rstrip(b"=")
    forged = (signed + b"." + signature).decode()
    assert client.get(PROTECTED, headers=bearer(forged)).status_code == 401


def test_missing_or_garbage_credentials_are_refused(client) -> None:
    assert client.get(PROTECTED).status_code == 401
    assert client.get(PROTECTED, headers=bearer("not-a-jwt")).status_code == 401
    assert client.get(PROTECTED, headers={"Authorization": "Basic dXNlcjpwdw=="}).status_code == 401


def test_api_key(client) -> None:
    assert client.get(PROTECTED, headers={"X-API-Key": "static-key-for-tests"}).status_code == 200
    assert client.get(PROTECTED, headers={"X-API-Key": "wrong"}).status_code == 401


def test_query_token_only_for_browser_endpoints(client, signing_key) -> None:
    assert client.get(f"{PROTECTED}?access_token=static-key-for-tests").status_code == 401
    assert client.get("/dashboard?access_token=static-key-for-tests").status_code == 200
    assert client.get(f"/dashboard?access_token={token(signing_key)}").status_code == 200
    assert client.get("/dashboard?access_token=wrong").status_code == 401


def test_root_and_health_are_open(client) -> None:
    assert client.get("/").status_code == 200
    assert client.get("/health").json == {"status": "healthy"}


def test_unknown_paths_do_not_reveal_themselves_without_credentials(client) -> None:
    assert client.get("/no-such-thing").status_code == 401


def test_auth_disabled_opens_everything_and_warns(redis_url, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="web.app"):
        app = create_app(load_settings(auth_disabled=True))
    assert "AUTH_DISABLED" in caplog.text
    assert app.test_client().get(PROTECTED).status_code == 200


def test_auth_on_without_configuration_refuses_to_start(redis_url) -> None:
    with pytest.raises(AuthConfigError, match="AUTH_JWKS_URL"):
        create_app(load_settings())


def test_jwt_auth_without_an_issuer_warns_loudly_at_start(redis_url, jwks_url, caplog) -> None:
    open_to_any_tenant = load_settings(auth_jwks_url=jwks_url, auth_audiences=[AUDIENCE])
    with caplog.at_level(logging.WARNING, logger="web.app"):
        create_app(open_to_any_tenant)
    assert "AUTH_ISSUER is unset" in caplog.text and "ANY Entra ID tenant" in caplog.text
    caplog.clear()
    pinned = load_settings(auth_jwks_url=jwks_url, auth_audiences=[AUDIENCE], auth_issuer=ISSUER)
    with caplog.at_level(logging.WARNING, logger="web.app"):
        create_app(pinned)
    assert "AUTH_ISSUER" not in caplog.text
