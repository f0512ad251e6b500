"""TokenClient keeps the older client's names and return shapes; SyncTokenClient mirrors it."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest

from quota import QuotaLimiter, SyncTokenClient, TokenClient
from settings import load_settings

OLDER_STATUS = {
    "available_tokens",
    "used_tokens",
    "locked_tokens",
    "available_requests",
    "used_requests",
    "locked_requests",
    "reset_time_seconds",
}


@pytest.mark.parametrize("state_url", ["plain", "cluster"], indirect=True)
def test_older_async_usage_runs_unchanged_on_the_real_redis(state_client):
    # "cluster": STATE_REDIS_URL names a Redis Cluster, and the asyncio client is a cluster one.
    async def older_code() -> None:
        # Exactly the older service's calls; only the import changed.
        client = TokenClient(app_id="my_app", base_url="http://token-counter:8000")
        allowed, request_id, error = await client.lock_tokens(1000)
        assert allowed and error is None and request_id.count(":") == 1
        assert await client.report_usage(request_id, prompt_tokens=500, completion_tokens=200)
        status = await client.get_status()
        assert set(status) == OLDER_STATUS and status["used_tokens"] == 1000

        allowed, request_id, error = await client.lock_embedding_tokens(5000)
        assert allowed
        assert await client.report_embedding_usage(request_id, prompt_tokens=5000)
        assert (await client.get_embedding_status())["used_tokens"] == 5000

        allowed, request_id, error = await client.lock_whisper_rate()
        assert allowed
        assert await client.release_whisper_rate(request_id)
        whisper = await client.get_whisper_status()
        assert set(whisper) == {
            "available_requests",
            "used_requests",
            "locked_requests",
            "reset_time_seconds",
        }
        await client.aclose()

    asyncio.run(older_code())
    assert list(state_client.scan_iter("conduit:quota:*"))  # where STATE_REDIS_URL says


@pytest.fixture
def sync_client():
    redis_client = fakeredis.FakeRedis()
    limiter = QuotaLimiter(redis_client, load_settings())
    limiter.set_limits("completion", "gpt-4o", tpm=1000, rpm=60)
    deployments = {"completion": "gpt-4o"}
    with SyncTokenClient("feedback", limiter=limiter, deployments=deployments) as client:
        yield client
    redis_client.close()


def test_a_refusal_is_false_none_and_the_older_message(sync_client):
    assert sync_client.lock_tokens(800)[0]
    allowed, request_id, error = sync_client.lock_tokens(300)
    assert (allowed, request_id) == (False, None)
    assert error.startswith("Token limit would be exceeded")


def test_a_report_or_release_the_limiter_refuses_answers_false(sync_client, caplog):
    _, request_id, _ = sync_client.lock_tokens(100)
    assert sync_client.release_tokens(request_id) is True
    assert sync_client.release_tokens(request_id) is False
    assert sync_client.report_usage(request_id, 1, 1) is False
    assert "already reported or released" in caplog.text


def test_an_id_from_another_pool_is_refused(sync_client):
    _, request_id, _ = sync_client.lock_tokens(100)
    assert sync_client.report_embedding_usage(request_id, prompt_tokens=100) is False
    assert sync_client.get_status()["locked_tokens"] == 100


def test_malformed_token_counts_still_raise(sync_client):
    with pytest.raises(ValueError, match="tokens must be a whole number"):
        sync_client.lock_tokens(-1)
