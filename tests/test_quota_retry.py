"""quota.retry waits as long as quota says, retries only refusals, and gives up when told to."""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise

import fakeredis
import pytest

from quota import (
    QuotaExceeded,
    QuotaLimiter,
    SyncTokenClient,
    with_token_limit_retry,
    with_token_limit_retry_decorator,
)
from settings import load_settings
from tests.support.quota import granted, reason

RETRY_AFTER_S = 0.05


class Flaky:
    """Refused by quota ``refusals`` times, then answers; records when each attempt started."""

    def __init__(self, refusals: int, error: Exception | None = None) -> None:
        self.refusals = refusals
        self.error = error or QuotaExceeded("Token limit would be exceeded: test", RETRY_AFTER_S)
        self.started: list[float] = []

    def __call__(self, value: str) -> str:
        self.started.append(time.monotonic())
        if len(self.started) <= self.refusals:
            raise self.error
        return value.upper()

    async def call_async(self, value: str) -> str:
        return self(value)


@pytest.fixture
def token_client():
    redis_client = fakeredis.FakeRedis()
    with SyncTokenClient("app", limiter=QuotaLimiter(redis_client, load_settings())) as client:
        yield client
    redis_client.close()


def test_a_refused_call_is_retried_after_retry_after(token_client):
    flaky = Flaky(refusals=2)
    assert with_token_limit_retry(flaky, token_client, 3, "ok") == "OK"
    assert len(flaky.started) == 3
    gaps = [later - earlier for earlier, later in pairwise(flaky.started)]
    assert all(gap >= RETRY_AFTER_S for gap in gaps)


def test_async_functions_are_retried_and_awaited(token_client):
    flaky = Flaky(refusals=1)
    decorated = with_token_limit_retry_decorator(token_client, max_retries=2)(flaky.call_async)
    assert asyncio.run(decorated("ok")) == "OK"
    assert len(flaky.started) == 2


def test_after_max_retries_the_refusal_is_raised(token_client):
    flaky = Flaky(refusals=10)
    with pytest.raises(QuotaExceeded):
        with_token_limit_retry(flaky, token_client, 2, "ok")
    assert len(flaky.started) == 3


@pytest.mark.parametrize(
    "error",
    [
        QuotaExceeded("Token limit would be exceeded: never fits", None),
        KeyError("not quota"),
        RuntimeError("upstream failed"),
    ],
)
def test_what_cannot_succeed_by_waiting_is_raised_at_once(token_client, error):
    flaky = Flaky(refusals=1, error=error)
    with pytest.raises(type(error)):
        with_token_limit_retry(flaky, token_client, 3, "ok")
    assert len(flaky.started) == 1


def test_a_wait_longer_than_max_wait_is_not_waited(token_client):
    flaky = Flaky(refusals=1, error=QuotaExceeded("Token limit would be exceeded: x", 30.0))
    call = with_token_limit_retry_decorator(token_client, max_retries=3, max_wait_s=1)(flaky)
    with pytest.raises(QuotaExceeded):
        call("ok")
    assert len(flaky.started) == 1


def test_the_older_wording_waits_for_the_pool_to_reset(token_client):
    token_client.limiter.set_limits("whisper", token_client.deployments["whisper"], rpm=6)
    assert token_client.lock_whisper_rate()[0]
    reset = token_client.get_whisper_status()["reset_time_seconds"]
    flaky = Flaky(refusals=1, error=RuntimeError("Whisper rate limit exceeded"))
    # The whisper pool frees its one request in about a minute: more than we allow to wait.
    call = with_token_limit_retry_decorator(token_client, max_retries=1, max_wait_s=5)(flaky)
    with pytest.raises(RuntimeError, match="Whisper rate limit exceeded"):
        call("ok")
    assert reset > 5 and len(flaky.started) == 1
    # The completion pool is empty, so an older-style token refusal is retried straight away.
    flaky = Flaky(refusals=1, error=RuntimeError("Token limit would be exceeded: x"))
    assert with_token_limit_retry(flaky, token_client, 1, "ok") == "OK"


def test_end_to_end_a_task_refused_by_the_limiter_runs_once_capacity_frees():
    redis_client = fakeredis.FakeRedis()
    # The window alone, no upstream margin: capacity frees within a second.
    limiter = QuotaLimiter(redis_client, load_settings(quota_upstream_margin_s=0), window_s=1)
    limiter.set_limits("completion", "gpt-4o", tpm=100, rpm=6000)
    with SyncTokenClient("app", limiter=limiter, deployments={"completion": "gpt-4o"}) as client:

        @with_token_limit_retry_decorator(client, max_retries=2, max_wait_s=2)
        def call_azure(tokens: int) -> str:
            decision = limiter.acquire("completion", "gpt-4o", tokens, "app")
            if not decision.allowed:
                raise QuotaExceeded(reason(decision), decision.retry_after_s)
            request_id = granted(decision)
            limiter.report(request_id, tokens, 0)
            return request_id

        first, second = call_azure(80), call_azure(80)
    assert first != second
    redis_client.close()
