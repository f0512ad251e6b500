"""The older token counter's HTTP API, answered by quota/ on the real embedded Redis, by both
servers that serve it: the web app (Flask) and the counter server (web/counter_server.py, ASGI).

Shapes are the older service's: refusals are HTTP 200 ``allowed: false`` with the older wording,
ids the limiter does not know are 400 ``{"detail": ...}``. Auth is off in most tests here
(test_web_auth.py covers the web app's rules; the last tests check both servers apply them).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.testclient import TestClient

from settings import Settings, load_settings
from settings.redis_server import RedisServer
from web.app import MAX_REQUEST_BYTES, create_app
from web.counter_server import CounterServer

STATUS_FIELDS = {
    "available_tokens",
    "used_tokens",
    "locked_tokens",
    "available_requests",
    "used_requests",
    "locked_requests",
    "reset_time_seconds",
}
WHISPER_STATUS_FIELDS = {
    "available_requests",
    "used_requests",
    "locked_requests",
    "reset_time_seconds",
}


class CounterServerResponse:
    """An httpx response read the way these tests read Flask's (``.json``, ``.is_json``)."""

    def __init__(self, response: Any) -> None:  # starlette's httpx response
        self._response = response
        self.status_code = response.status_code
        self.headers = response.headers

    @property
    def is_json(self) -> bool:
        return self.headers.get("content-type", "").startswith("application/json")

    @property
    def json(self) -> Any:
        return self._response.json()


class CounterServerClient:
    """The counter server (ASGI, its lifespan run) behind Flask's test-client calls."""

    def __init__(self, client: TestClient) -> None:
        self._client = client

    def get(self, path: str, headers: dict[str, str] | None = None) -> CounterServerResponse:
        return CounterServerResponse(self._client.get(path, headers=headers))

    def post(
        self,
        path: str,
        json: object = None,
        data: str | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> CounterServerResponse:
        headers = {**(headers or {}), **({"content-type": content_type} if content_type else {})}
        return CounterServerResponse(
            self._client.post(path, json=json, content=data, headers=headers)
        )


SERVERS = ["web", "counter"]


@contextmanager
def _counter_server(settings: Settings) -> Iterator[CounterServerClient]:
    with TestClient(CounterServer(settings)) as test_client:
        yield CounterServerClient(test_client)


def serve(kind: str, settings: Settings) -> Any:
    """A test client of ``kind`` ("web": the Flask app; "counter": the counter server), to use
    as a context manager."""
    if kind == "web":
        return create_app(settings).test_client()
    return _counter_server(settings)


def limits() -> Settings:
    # RPM 60 allows 10 requests per 10 s (Azure's RPM/6); Whisper 6 allows one.
    return load_settings(
        auth_disabled=True,
        tpm_quota=1000,
        rpm_quota=60,
        embedding_tpm_quota=5000,
        embedding_rpm_quota=600,
        whisper_rpm_quota=6,
    )


@pytest.fixture(params=SERVERS)
def client(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Any]:
    """The counter's routes on either server."""
    with serve(request.param, limits()) as test_client:
        yield test_client


@pytest.fixture
def web_client(redis_url: str) -> Iterator[Any]:
    """The web app, for what only it serves (the banner, the quota API)."""
    with create_app(limits()).test_client() as test_client:
        yield test_client


def json_of(response: Any) -> Any:
    """A response's JSON body (Flask types it optional: None when the body is not JSON)."""
    assert response.is_json, response
    return response.json


def lock(client, path: str = "/lock", **body: object) -> dict:
    response = client.post(path, json={"app_id": "app1", "token_count": 100, **body})
    assert response.status_code == 200, response.json
    return response.json


def test_root_describes_the_service_and_its_limits(web_client) -> None:
    body = web_client.get("/").json
    assert body["status"] == "running"
    assert {"app", "version", "start_time"} <= body.keys()
    assert body["token_limit_per_minute"] == 1000
    assert body["rate_limit_per_minute"] == 60
    assert body["embedding_token_limit_per_minute"] == 5000
    assert body["embedding_rate_limit_per_minute"] == 600
    assert body["whisper_rate_limit_per_minute"] == 6


def test_health(client) -> None:
    assert client.get("/health").json == {"status": "healthy"}


def test_lock_report_status_round_trip(client) -> None:
    granted = lock(client, token_count=300)
    assert granted["allowed"] is True
    assert granted["message"] is None
    token_id, _, rate_id = granted["request_id"].partition(":")
    assert token_id and rate_id == granted["rate_request_id"]

    status = client.get("/status").json
    assert set(status) == STATUS_FIELDS
    assert status["locked_tokens"] == 300
    assert status["locked_requests"] == 1

    report = client.post(
        "/report",
        json={
            "app_id": "app1",
            "request_id": granted["request_id"],
            "prompt_tokens": 200,
            "completion_tokens": 50,
            "rate_request_id": granted["rate_request_id"],
        },
    )
    assert report.status_code == 200
    assert report.json == {"success": True}
    status = client.get("/status").json
    assert status["locked_tokens"] == 0
    assert status["used_tokens"] >= 250
    assert status["available_tokens"] == 1000 - status["used_tokens"]


def test_token_refusal_is_200_with_the_older_wording(client) -> None:
    refused = lock(client, token_count=5000)
    assert refused["allowed"] is False
    assert refused["request_id"] is None
    assert refused["message"].startswith("Token limit would be exceeded")


def test_request_refusal_is_200_with_the_older_wording(client) -> None:
    for _ in range(10):
        assert lock(client, token_count=1)["allowed"]
    refused = lock(client, token_count=1)
    assert refused["allowed"] is False
    assert refused["message"].startswith("API Rate limit would be exceeded")


def test_release_gives_tokens_back(client) -> None:
    granted = lock(client, token_count=400)
    response = client.post("/release", json={"app_id": "app1", "request_id": granted["request_id"]})
    assert response.json == {"success": True}
    assert client.get("/status").json["locked_tokens"] == 0


@pytest.mark.parametrize("path", ["/report", "/release"])
def test_unknown_or_settled_ids_are_400_with_detail(client, path: str) -> None:
    body = {
        "app_id": "app1",
        "request_id": "completion/gpt-4o/t999:r999",
        "prompt_tokens": 1,
        "completion_tokens": 1,
    }
    response = client.post(path, json=body)
    assert response.status_code == 400
    assert "unknown" in response.json["detail"]

    garbage = client.post(path, json={**body, "request_id": "not-an-id"})
    assert garbage.status_code == 400
    assert "detail" in garbage.json

    granted = lock(client)
    settle = {**body, "request_id": granted["request_id"]}
    assert client.post(path, json=settle).status_code == 200
    again = client.post(path, json=settle)
    assert again.status_code == 400
    assert "already" in again.json["detail"]


def test_embedding_pool(client) -> None:
    granted = lock(client, "/embedding/lock", token_count=1000)
    assert granted["allowed"] and granted["rate_request_id"]
    report = client.post(
        "/embedding/report",
        json={"app_id": "app1", "prompt_tokens": 900, "request_id": granted["request_id"]},
    )
    assert report.json == {"success": True}
    status = client.get("/embedding/status").json
    assert set(status) == STATUS_FIELDS
    assert status["used_tokens"] >= 900
    # The embedding pool is separate: the completion pool is untouched.
    assert client.get("/status").json["used_tokens"] == 0
    # An id from one pool cannot settle a lock of another.
    other = lock(client, token_count=10)
    mixed = client.post(
        "/embedding/release", json={"app_id": "app1", "request_id": other["request_id"]}
    )
    assert mixed.status_code == 400


def test_whisper_pool_counts_requests_only(client) -> None:
    granted = client.post("/whisper/lock", json={"app_id": "app1"}).json
    assert set(granted) == {"allowed", "request_id", "message"}
    assert granted["allowed"] is True
    refused = client.post("/whisper/lock", json={"app_id": "app1"}).json
    assert refused["allowed"] is False
    assert refused["message"].startswith("Whisper rate limit exceeded")

    status = client.get("/whisper/status").json
    assert set(status) == WHISPER_STATUS_FIELDS
    assert status["locked_requests"] == 1
    report = client.post(
        "/whisper/report", json={"app_id": "app1", "request_id": granted["request_id"]}
    )
    assert report.json == {"success": True}
    assert (
        client.post(
            "/whisper/release", json={"app_id": "app1", "request_id": granted["request_id"]}
        ).status_code
        == 400
    )


def test_bad_bodies_are_json_errors(client) -> None:
    missing = client.post("/lock", json={"app_id": "app1"})
    assert missing.status_code == 422
    assert missing.json["detail"][0]["loc"] == ["token_count"]

    negative = client.post("/lock", json={"app_id": "app1", "token_count": -5})
    assert negative.status_code == 400
    assert "token" in negative.json["detail"]

    not_json = client.post("/lock", data="{not json", content_type="application/json")
    assert not_json.status_code == 400
    assert "detail" in not_json.json

    huge = client.post("/lock", data="x" * (MAX_REQUEST_BYTES + 1), content_type="application/json")
    assert huge.status_code == 413
    assert "detail" in huge.json

    assert client.get("/lock").status_code == 405
    unknown = client.get("/no-such-page")
    assert unknown.status_code == 404
    assert "detail" in unknown.json


def test_quota_api_lists_every_pool_with_the_per_app_split(web_client) -> None:
    lock(web_client, token_count=120, app_id="feedback")
    lock(web_client, token_count=30, app_id="search")
    body = web_client.get("/api/v1/quota").json
    assert body["window_seconds"] == 60
    pools = {entry["pool"]: entry for entry in body["pools"]}
    assert set(pools) == {"completion", "embedding", "whisper"}
    completion = pools["completion"]
    assert completion["deployment"] == "gpt-4o"
    assert completion["tpm"] == 1000
    assert completion["apps"] == {
        "feedback": {"tokens": 120, "requests": 1},
        "search": {"tokens": 30, "requests": 1},
    }


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/lock", "token_count", "10"),
        ("/lock", "token_count", True),
        ("/lock", "token_count", 1e3),
        ("/embedding/lock", "token_count", 10.5),
        ("/report", "prompt_tokens", "5"),
        ("/report", "completion_tokens", False),
        ("/embedding/report", "prompt_tokens", 2e1),
    ],
)
def test_counts_must_be_strict_integers(client, path: str, field: str, value: object) -> None:
    body = {
        "app_id": "app1",
        "token_count": 10,
        "request_id": "completion/gpt-4o/t1:r1",
        "prompt_tokens": 1,
        "completion_tokens": 1,
        field: value,
    }
    response = client.post(path, json=body)
    assert response.status_code == 400, response.json
    assert response.json["detail"].startswith(f"{field} must be a JSON integer")
    assert repr(value) in response.json["detail"]
    # Nothing was locked.
    assert client.get("/status").json["locked_requests"] == 0


@pytest.mark.parametrize("kind", SERVERS)
def test_status_is_503_with_the_reason_while_redis_is_down(kind: str, tmp_path) -> None:
    server = RedisServer(tmp_path).start()
    settings = load_settings(auth_disabled=True, redis_url=server.url)
    paths = ("/status", "/whisper/status") + (("/api/v1/quota",) if kind == "web" else ())
    try:
        with serve(kind, settings) as client:
            assert client.get("/status").status_code == 200
            server.stop()
            for path in paths:
                down = client.get(path)
                assert down.status_code == 503, (path, down.json)
                assert json_of(down)["detail"].startswith("quota store unreachable")
            refused = client.post("/lock", json={"app_id": "a", "token_count": 1})
            assert refused.status_code == 503
    finally:
        server.stop()


@pytest.mark.parametrize("kind", SERVERS)
def test_the_hot_routes_need_the_credential_like_every_other(kind: str, redis_url: str) -> None:
    key = "k" * 32
    with serve(kind, load_settings(auth_api_key=key)) as client:
        body = {"app_id": "app1", "token_count": 1}
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer x.y.z"}):
            refused = client.post("/lock", json=body, headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["WWW-Authenticate"].startswith("Bearer")
            assert "detail" in json_of(refused)
        granted = client.post("/lock", json=body, headers={"X-API-Key": key})
        assert granted.status_code == 200 and json_of(granted)["allowed"] is True
        release = client.post(
            "/release",
            json={"app_id": "app1", "request_id": json_of(granted)["request_id"]},
            headers={"X-API-Key": key},
        )
        assert release.json == {"success": True}
        assert client.get("/lock", headers={"X-API-Key": key}).status_code == 405
        assert client.get("/health").status_code == 200  # open, as before
