"""QuotaLimiter and AsyncQuotaLimiter against a real redis-server: script reloads, restarts,
and the asyncio client end to end."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import redis
import redis.asyncio

from quota import AsyncQuotaLimiter, QuotaLimiter, Settlement
from settings import load_settings
from settings.redis_server import RedisServer
from tests.support.quota import granted, reason, retry_after

DEPLOYMENT = "gpt-4o"


def test_script_flush_is_survived_by_loading_the_script_again(redis_url, redis_client):
    client = redis.Redis.from_url(redis_url)
    limiter = QuotaLimiter(client, load_settings())
    assert limiter.acquire("completion", DEPLOYMENT, 10, "a").allowed
    redis_client.script_flush()
    assert limiter.acquire("completion", DEPLOYMENT, 10, "a").allowed
    assert limiter.status("completion", DEPLOYMENT).locked_tokens == 20
    client.close()


def test_a_restarted_redis_gets_the_script_again(tmp_path: Path):
    server = RedisServer(tmp_path).start()
    client = redis.Redis.from_url(server.url)
    try:
        limiter = QuotaLimiter(client, load_settings())
        assert limiter.acquire("completion", DEPLOYMENT, 10, "a").allowed
        server.stop()
        server = RedisServer(tmp_path, port=server.port).start()
        assert limiter.acquire("completion", DEPLOYMENT, 10, "a").allowed
    finally:
        client.close()
        server.stop()


def test_retry_after_is_honest_on_the_real_server(redis_url):
    client = redis.Redis.from_url(redis_url)
    limiter = QuotaLimiter(client, load_settings(quota_upstream_margin_s=0.5), window_s=1)
    limiter.set_limits("completion", DEPLOYMENT, tpm=100, rpm=6000)
    assert limiter.acquire("completion", DEPLOYMENT, 100, "a").allowed
    refused = limiter.acquire("completion", DEPLOYMENT, 1, "a")
    # The window, the margin and at most one bucket (25 ms) more.
    assert not refused.allowed and 1.0 < retry_after(refused) <= 1.55
    time.sleep(retry_after(refused))
    assert limiter.acquire("completion", DEPLOYMENT, 100, "a").allowed
    client.close()


def test_the_asyncio_limiter_does_what_the_sync_one_does(redis_url):
    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        limiter = AsyncQuotaLimiter(client, load_settings(quota_charge_model="usage"))
        await limiter.set_limits("completion", DEPLOYMENT, tpm=1000, rpm=60)
        first = await limiter.acquire("completion", DEPLOYMENT, 600, "feedback")
        refused = await limiter.acquire("completion", DEPLOYMENT, 600, "feedback")
        assert first.allowed and reason(refused).startswith("Token limit would be exceeded")
        await client.script_flush()
        assert await limiter.report(granted(first), 100, 100) == Settlement(0, 400)
        second = await limiter.acquire("completion", DEPLOYMENT, 600, "reasoner")
        assert await limiter.release(granted(second)) == Settlement(0, 600)
        usage = await limiter.observe_upstream("completion", DEPLOYMENT, remaining_tokens=700)
        assert usage.tokens == 100
        status = await limiter.status("completion", DEPLOYMENT)
        assert (status.used_tokens, status.available_tokens) == (300, 700)
        pools = {status.pool for status in await limiter.all_status()}
        assert pools == {"completion", "embedding", "whisper"}
        await client.aclose()

    asyncio.run(scenario())
