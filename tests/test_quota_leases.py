"""Quota leases (quota/leases.py, acquire.lua and settle.lua): room charged in Redis that one
process grants from in memory, writing its grants and settlements behind.

First the scripts, on the limiter: what a lease takes, how grants are carved out of it or booked
together, and what giving it back returns. Then QuotaLeases on the real Redis: grants without a
round trip, the same counts in Redis as locks made there one by one, settlements in another
process, a crash, and writes that wait for Redis. The over-admission audit races leases too
(test_quota_audit.py).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import fakeredis
import pytest
import redis
import redis.asyncio

from quota import AsyncQuotaLimiter, QuotaError, QuotaLeases, QuotaLimiter, QuotaStatus
from quota.sansio import LeaseGrant
from settings import Settings, load_settings
from tests.support.quota import granted, retry_after
from tests.support.waiting import wait_until

DEPLOYMENT = "gpt-4o"
LEASE_S = 0.05
T = TypeVar("T")


@pytest.fixture
def client() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    yield client
    client.close()


def quota_settings(**options: Any) -> Settings:
    return load_settings(
        **{
            "tpm_quota": 100_000,
            "rpm_quota": 1_000,
            "quota_upstream_margin_s": 0.5,
            "quota_lease_s": LEASE_S,
            **options,
        }
    )


def lease_of(limiter: QuotaLimiter, tokens: int, requests: int, lease_tokens: int) -> LeaseGrant:
    decision, _, lease = limiter.acquire_with_lease(
        "completion",
        DEPLOYMENT,
        tokens,
        "app",
        lease_requests=requests,
        lease_tokens=lease_tokens,
        lease_hold_s=0.1,
    )
    granted(decision)
    assert lease is not None, "no lease granted"
    return lease


def status(limiter: QuotaLimiter) -> QuotaStatus:
    return limiter.status("completion", DEPLOYMENT)


def counts(status: QuotaStatus) -> tuple[int, int, int, int]:
    return status.used_tokens, status.locked_tokens, status.used_requests, status.locked_requests


# --- the scripts -------------------------------------------------------------------------------
def test_a_lease_takes_at_most_an_eighth_of_the_room_left_and_is_charged_as_locked(client):
    limiter = QuotaLimiter(client, quota_settings(tpm_quota=10_000, rpm_quota=1_200))
    lease = lease_of(limiter, 1_000, requests=50, lease_tokens=50_000)
    # After the request: 9,000 tokens of room, and 199 requests in the sixth of the window
    # (Azure's 10 s); an eighth of each.
    assert (lease.requests, lease.tokens, lease.deployment) == (24, 1_125, DEPLOYMENT)
    assert counts(status(limiter)) == (0, 1_000 + 1_125, 0, 1 + 24)
    # It asks for less than an eighth: it gets what it asked for.
    assert (lease_of(limiter, 10, requests=2, lease_tokens=20).requests) == 2


def test_near_the_limit_no_lease_is_granted_and_an_app_with_a_share_never_gets_one(client):
    limiter = QuotaLimiter(client, quota_settings(tpm_quota=1_000, rpm_quota=12))
    decision, _, lease = limiter.acquire_with_lease(
        "completion", DEPLOYMENT, 10, "app", lease_requests=8, lease_tokens=80, lease_hold_s=0.1
    )
    # A sixth of the window allows 2 requests: one room left, an eighth of it is none.
    assert decision.allowed and lease is None

    shared = QuotaLimiter(client, quota_settings(quota_app_shares="greedy=0.5"))
    decision, _, lease = shared.acquire_with_lease(
        "completion", "other", 10, "greedy", lease_requests=8, lease_tokens=80, lease_hold_s=0.1
    )
    assert decision.allowed and lease is None


def test_carved_grants_are_locks_any_process_settles_and_the_counts_do_not_move(client):
    limiter = QuotaLimiter(client, quota_settings())
    lease = lease_of(limiter, 100, requests=4, lease_tokens=400)
    before = counts(status(limiter))
    assert all(
        result.done
        for result in limiter.settle_many(
            "completion",
            DEPLOYMENT,
            DEPLOYMENT,
            [f"carve {lease.lease_id} 1 150", f"carve {lease.lease_id} 2 50"],
        )
    )
    assert counts(status(limiter)) == before
    carved = f"completion/{DEPLOYMENT}/t{lease.lease_id}.1:r{lease.lease_id}.1"
    assert limiter.report(carved, 100, 100).charged_tokens == 50  # 200 used of 150 locked
    with pytest.raises(QuotaError, match="already reported or released"):
        limiter.report(carved, 1, 1)
    # Giving the lease back returns what it still holds: 2 requests and 200 tokens.
    (result,) = limiter.settle_many(
        "completion", DEPLOYMENT, DEPLOYMENT, [f"release {lease.lease_id}"]
    )
    assert result.done and result.refunded_tokens == 200
    used_tokens, locked_tokens, used_requests, locked_requests = counts(status(limiter))
    # The acquire's own lock (100) and grant 2 (50) stay locked; grant 1 used 200.
    assert (used_tokens, locked_tokens, used_requests, locked_requests) == (200, 150, 1, 2)


def test_grants_settled_before_they_were_carved_are_booked_together(client):
    limiter = QuotaLimiter(client, quota_settings(quota_charge_model="usage"))
    lease = lease_of(limiter, 10, requests=8, lease_tokens=800)
    # Three grants of 100: one used 150, one used 40 (60 back), one released (100 and its
    # request back).
    (result,) = limiter.settle_many(
        "completion", DEPLOYMENT, DEPLOYMENT, [f"settled {lease.lease_id} 3 300 50 160 1"]
    )
    assert (result.done, result.charged_tokens, result.refunded_tokens) == (True, 50, 160)
    limiter.settle_many("completion", DEPLOYMENT, DEPLOYMENT, [f"release {lease.lease_id}"])
    # 150 + 40 used; the acquire's own lock of 10 still locked.
    assert counts(status(limiter)) == (190, 10, 2, 1)


def test_a_lease_cannot_hand_out_more_than_it_holds_and_a_bad_batch_changes_nothing(client):
    limiter = QuotaLimiter(client, quota_settings())
    lease = lease_of(limiter, 10, requests=2, lease_tokens=100)
    results = limiter.settle_many(
        "completion",
        DEPLOYMENT,
        DEPLOYMENT,
        [
            f"carve {lease.lease_id} 1 101",  # more tokens than it holds
            f"settled {lease.lease_id} 3 30 0 0 0",  # more requests than it holds
            "carve 1 1 10",  # lock 1 is the acquire's own, not a lease
        ],
    )
    assert [result.why for result in results] == ["overdrawn"] * 3
    before = counts(status(limiter))
    with pytest.raises(QuotaError, match="bad quota call: settle carve 2"):
        limiter.settle_many(
            "completion", DEPLOYMENT, DEPLOYMENT, [f"carve {lease.lease_id} 1 10", "carve 2"]
        )
    assert counts(status(limiter)) == before


def test_a_refusal_held_only_by_leased_room_is_told_to_retry_when_the_lease_ends(client):
    limiter = QuotaLimiter(client, quota_settings(tpm_quota=8_000, rpm_quota=1_000))
    lease_of(limiter, 6_000, requests=8, lease_tokens=10_000)  # leases 250 of the 2,000 left
    refused = limiter.acquire("completion", DEPLOYMENT, 1_800, "other")
    assert not refused.allowed and retry_after(refused) <= 0.1
    # Beyond what the leases hold: the window's own wait, as without leases.
    refused = limiter.acquire("completion", DEPLOYMENT, 2_100, "other")
    assert not refused.allowed and retry_after(refused) > 50


def test_an_abandoned_lease_expires_and_stays_spent(client):
    limiter = QuotaLimiter(client, quota_settings(quota_lock_ttl_s=1))
    lease_of(limiter, 100, requests=4, lease_tokens=400)
    wait_until(lambda: status(limiter).locked_tokens == 0, timeout=10, what="the lease to expire")
    assert counts(status(limiter)) == (500, 0, 5, 0)


# --- QuotaLeases on the real Redis --------------------------------------------------------------
def run(url: str, body: Callable[[QuotaLeases, QuotaLimiter], Awaitable[T]], **options: Any) -> T:
    """``body(leases, limiter)`` on a fresh event loop: QuotaLeases on an asyncio client, and a
    blocking limiter on the same Redis to look at what Redis holds."""
    settings = quota_settings(redis_url=url, **options)

    async def main() -> T:
        client = redis.asyncio.Redis.from_url(url)
        leases = QuotaLeases(AsyncQuotaLimiter(client, settings), settings.quota_lease_s)
        observer = QuotaLimiter(redis.Redis.from_url(url), settings)
        try:
            return await body(leases, observer)
        finally:
            await leases.aclose()
            await client.aclose()
            observer.client.close()

    return asyncio.run(main())


def lease_id_of(request_id: str) -> str:
    return request_id.rsplit("/t", 1)[1].split(".", maxsplit=1)[0]


def test_locks_come_from_one_lease_and_reports_reach_redis_behind_the_answers(redis_url):
    async def body(leases: QuotaLeases, observer: QuotaLimiter) -> None:
        first = granted(await leases.acquire("completion", DEPLOYMENT, 100, "app"))
        assert "." not in first  # the acquire that brought the lease locks in Redis
        grants = [
            granted(await leases.acquire("completion", DEPLOYMENT, 100, "app")) for _ in range(3)
        ]
        assert len({lease_id_of(grant) for grant in grants}) == 1
        assert all("." in grant for grant in grants)
        for grant in [first, *grants]:
            await leases.report(grant, 50, 30)
        with pytest.raises(QuotaError, match="already reported or released"):
            await leases.report(grants[0], 1, 1)
        # Written behind: Redis has them once the writes are sent.
        await leases.flush()
        used_tokens, _, used_requests, _ = counts(status(observer))
        assert (used_tokens, used_requests) == (400, 4)
        # What is still locked is the room the lease holds, until it is given back.
        await asyncio.sleep(2 * LEASE_S)
        await leases.flush()
        assert counts(status(observer)) == (400, 0, 4, 0)

    run(redis_url, body)


@pytest.mark.parametrize("charge_model", ["azure", "usage"])
def test_leases_leave_redis_as_locks_made_one_by_one_would(redis_url, charge_model):
    """The same random locks, reports and releases through leases and through the limiter, on
    two deployments: once everything is written, Redis holds the same counts for both."""

    async def body(leases: QuotaLeases, observer: QuotaLimiter) -> None:
        rng = random.Random(7)
        held: list[tuple[str, str]] = []
        for _ in range(300):
            if held and rng.random() < 0.5:
                leased, direct = held.pop(rng.randrange(len(held)))
                if rng.random() < 0.2:
                    await leases.release(leased)
                    observer.release(direct)
                else:
                    used = rng.randint(0, 300), rng.randint(0, 100)
                    await leases.report(leased, *used)
                    observer.report(direct, *used)
            else:
                tokens = rng.randint(1, 200)
                from_lease = await leases.acquire("completion", "leased", tokens, "app")
                from_redis = observer.acquire("completion", "direct", tokens, "app")
                held.append((granted(from_lease), granted(from_redis)))
            if rng.random() < 0.05:
                await asyncio.sleep(rng.uniform(0, 2 * LEASE_S))  # leases end and renew
        await leases.aclose()
        via_leases = observer.status("completion", "leased")
        one_by_one = observer.status("completion", "direct")
        assert counts(via_leases) == counts(one_by_one)
        assert via_leases.locked_requests == len(held)

    run(redis_url, body, quota_charge_model=charge_model)


def test_a_grant_is_settled_once_whichever_process_each_report_reaches(redis_url):
    async def body(leases: QuotaLeases, observer: QuotaLimiter) -> None:
        settings = quota_settings(redis_url=redis_url)
        other_client = redis.asyncio.Redis.from_url(redis_url)
        other = QuotaLeases(AsyncQuotaLimiter(other_client, settings), LEASE_S)
        try:
            await leases.acquire("completion", DEPLOYMENT, 10, "app")
            grant = granted(await leases.acquire("completion", DEPLOYMENT, 10, "app"))
            # At once: the grant is not written yet; the other process waits for it.
            await other.report(grant, 5, 5)
            with pytest.raises(QuotaError, match="already reported or released"):
                await other.report(grant, 5, 5)
            # Sent to the one that granted it too: refused there as well.
            with pytest.raises(QuotaError, match="already reported or released"):
                await leases.report(grant, 5, 5)
            # And one settled where it was granted is refused by the other process.
            early = granted(await leases.acquire("completion", DEPLOYMENT, 10, "app"))
            await leases.release(early)
            with pytest.raises(QuotaError, match="is unknown here"):
                await other.release(early)
            await leases.aclose()
            assert status(observer).used_requests == 1
        finally:
            await other.aclose()
            await other_client.aclose()

    run(redis_url, body)


def test_a_crash_leaves_the_lease_spent_until_it_expires(redis_url):
    settings = quota_settings(redis_url=redis_url, quota_lock_ttl_s=2)

    async def crash() -> list[str]:
        client = redis.asyncio.Redis.from_url(redis_url)
        leases = QuotaLeases(AsyncQuotaLimiter(client, settings), LEASE_S)
        grants = [
            granted(await leases.acquire("completion", DEPLOYMENT, 100, "app")) for _ in range(4)
        ]
        await leases.report(grants[1], 10, 10)
        await client.aclose()  # and nothing written behind: the process is gone
        return grants

    grants = asyncio.run(crash())
    observer = QuotaLimiter(redis.Redis.from_url(redis_url), settings)
    try:
        # Everything granted is inside what Redis counts: the lease and the acquire's own lock.
        used_tokens, locked_tokens, _, locked_requests = counts(status(observer))
        assert used_tokens + locked_tokens >= 400 and locked_requests >= 4
        wait_until(lambda: status(observer).locked_tokens == 0, timeout=10, what="expiry")
        assert status(observer).used_tokens >= 400  # spent: over-counted, never under
        with pytest.raises(QuotaError, match=r"expired|unknown"):
            observer.report(grants[2], 10, 10)
    finally:
        observer.client.close()


class FlakyLimiter(AsyncQuotaLimiter):
    """The real limiter, its writes refused as if Redis were unreachable until ``reachable``."""

    reachable = True

    async def settle_many(self, *args: Any, **kwargs: Any) -> Any:
        if not self.reachable:
            raise redis.exceptions.ConnectionError("Redis unreachable (test)")
        return await super().settle_many(*args, **kwargs)


def test_writes_wait_while_redis_is_unreachable_and_are_sent_when_it_is_back(redis_url, caplog):
    settings = quota_settings(redis_url=redis_url)

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        limiter = FlakyLimiter(client, settings)
        leases = QuotaLeases(limiter, LEASE_S)
        observer = QuotaLimiter(redis.Redis.from_url(redis_url), settings)
        # The first lock brings a lease of 4 (and is settled in Redis); 3 more come from it.
        await leases.report(granted(await leases.acquire("completion", DEPLOYMENT, 10, "a")), 5, 5)
        limiter.reachable = False
        for _ in range(3):
            await leases.report(
                granted(await leases.acquire("completion", DEPLOYMENT, 10, "a")), 5, 5
            )
        # The event loop runs on meanwhile: the writes are tried and fail.
        await asyncio.to_thread(
            wait_until, lambda: "writes wait" in caplog.text, timeout=10, what="a write to fail"
        )
        limiter.reachable = True
        await leases.aclose()
        assert counts(status(observer)) == (40, 0, 4, 0)
        observer.client.close()
        await client.aclose()

    asyncio.run(main())


def test_interactive_work_and_a_lease_time_beyond_half_the_margin_are_not_leased(redis_url):
    async def body(leases: QuotaLeases, observer: QuotaLimiter) -> None:
        for _ in range(3):
            decision = await leases.acquire("completion", DEPLOYMENT, 10, "app", "interactive")
            assert "." not in granted(decision)  # each decided in Redis
        # The 0.5 s margin rounds up to a 1 s bucket: half of it is 0.5 s.
        with pytest.raises(QuotaError, match=r"at most half the upstream margin \(0.5 s\)"):
            QuotaLeases(leases.limiter, 0.6)

    run(redis_url, body)
