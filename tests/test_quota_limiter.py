"""QuotaLimiter behaviour on fakeredis (which runs the real Lua script): fast, no servers.

Tests that need time to pass use a 1 s window or a 1 s lock TTL and sleep just past it; they
assert what the limiter decides, never how fast it is. They count the window alone (no upstream
margin) unless they are about the margin.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import fakeredis
import pytest
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from quota import QuotaError, QuotaLimiter, Settlement
from settings import load_settings
from tests.support.quota import granted, reason, retry_after
from tests.support.waiting import wait_until

DEPLOYMENT = "gpt-4o"


@pytest.fixture
def client() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    yield client
    client.close()


def make_limiter(
    client,
    *,
    window_s: float = 60,
    margin_s: float = 0,
    lock_ttl_s: int = 300,
    charge_model: str = "azure",
    tpm: int = 1000,
    rpm: int = 60,
    buckets: int = 60,
) -> QuotaLimiter:
    settings = load_settings(
        quota_lock_ttl_s=lock_ttl_s,
        quota_charge_model=charge_model,
        quota_upstream_margin_s=margin_s,
        quota_window_buckets=buckets,
    )
    limiter = QuotaLimiter(client, settings, window_s=window_s)
    limiter.set_limits("completion", DEPLOYMENT, tpm=tpm, rpm=rpm)
    return limiter


def snapshot(client) -> dict[bytes, object]:
    """Every key's content except the limiter's clock, to show a call changed nothing."""
    state = {}
    for key in client.keys("*"):
        kind = client.type(key)
        if kind == b"hash":
            fields = client.hgetall(key)
            if b"totals" in fields:  # "<clock> <the totals>": the clock moves on every call
                fields[b"totals"] = fields[b"totals"].split(b" ", 1)[1]
            state[key] = fields
        elif kind == b"zset":
            state[key] = client.zrange(key, 0, -1, withscores=True)
        else:
            state[key] = client.smembers(key)
    return state


def test_acquire_locks_tokens_and_a_request_until_reported(client):
    limiter = make_limiter(client)
    decision = limiter.acquire("completion", DEPLOYMENT, 300, "feedback")
    assert decision.allowed and decision.reason is None and decision.retry_after_s == 0
    assert decision.request_id == f"completion/{DEPLOYMENT}/t1:r1"
    status = limiter.status("completion", DEPLOYMENT)
    assert (status.available_tokens, status.locked_tokens, status.used_tokens) == (700, 300, 0)
    assert (status.locked_requests, status.available_requests) == (1, 9)

    assert limiter.report(granted(decision), 200, 100) == Settlement(0, 0)
    status = limiter.status("completion", DEPLOYMENT)
    assert (status.available_tokens, status.locked_tokens, status.used_tokens) == (700, 0, 300)
    assert status.apps["feedback"].tokens == 300


def test_a_refusal_says_why_and_changes_nothing(client):
    limiter = make_limiter(client)
    assert limiter.acquire("completion", DEPLOYMENT, 800, "feedback").allowed
    before = snapshot(client)
    decision = limiter.acquire("completion", DEPLOYMENT, 300, "feedback")
    assert not decision.allowed and decision.request_id is None
    assert reason(decision).startswith(
        "Token limit would be exceeded: 300 tokens requested, 200 of"
    )
    assert 59 < retry_after(decision) <= 61
    assert snapshot(client) == before


def test_requests_are_limited_per_sixth_of_the_window_as_azure_does(client):
    limiter = make_limiter(client, rpm=60)  # 10 per 10 s
    assert all(limiter.acquire("completion", DEPLOYMENT, 1, "a").allowed for _ in range(10))
    decision = limiter.acquire("completion", DEPLOYMENT, 1, "a")
    assert reason(decision).startswith(
        "API Rate limit would be exceeded: 10 of 10 requests in the last 10 s"
    )
    assert 9 < retry_after(decision) <= 11


def test_whisper_is_limited_by_requests_with_its_own_wording(client):
    limiter = make_limiter(client)
    limiter.set_limits("whisper", "whisper", rpm=12)  # 2 per 10 s
    assert limiter.acquire("whisper", "whisper", 0, "app").allowed
    assert limiter.acquire("whisper", "whisper", 0, "app").allowed
    assert reason(limiter.acquire("whisper", "whisper", 0, "app")).startswith(
        "Whisper rate limit exceeded: 2 of 2 requests"
    )


def test_a_request_larger_than_the_limit_is_told_it_never_fits(client):
    limiter = make_limiter(client, tpm=1000)
    decision = limiter.acquire("completion", DEPLOYMENT, 1001, "app")
    assert not decision.allowed and decision.retry_after_s is None
    assert "more than the whole limit of 1000" in reason(decision)


def test_retry_after_is_honest(client):
    limiter = make_limiter(client, window_s=1, tpm=100, rpm=600)
    assert limiter.acquire("completion", DEPLOYMENT, 70, "a").allowed
    time.sleep(0.3)
    assert limiter.acquire("completion", DEPLOYMENT, 30, "a").allowed
    refused = limiter.acquire("completion", DEPLOYMENT, 50, "a")
    # Only the first 70 tokens need to leave, about 0.7 s from now; not the whole window.
    assert not refused.allowed and retry_after(refused) < 0.9
    time.sleep(retry_after(refused))
    assert limiter.acquire("completion", DEPLOYMENT, 50, "a").allowed


@pytest.mark.parametrize("buckets", [60, 120])
def test_a_charge_stays_counted_for_the_upstream_margin_past_the_window(client, buckets):
    # 1 s window, 0.5 s margin: the upstream may count this charge until 1.5 s from now.
    limiter = make_limiter(client, window_s=1, margin_s=0.5, tpm=100, rpm=600, buckets=buckets)
    assert limiter.acquire("completion", DEPLOYMENT, 100, "a").allowed
    refused = limiter.acquire("completion", DEPLOYMENT, 1, "a")
    assert not refused.allowed and 1.0 < retry_after(refused) <= 1.55
    assert 1.0 < limiter.status("completion", DEPLOYMENT).reset_time_seconds <= 1.55
    time.sleep(1.1)  # past the window, not past the margin
    still = limiter.acquire("completion", DEPLOYMENT, 1, "a")
    assert not still.allowed and 0 < retry_after(still) <= 0.45
    time.sleep(retry_after(still))
    assert limiter.acquire("completion", DEPLOYMENT, 100, "a").allowed


def test_azure_charge_model_keeps_the_estimate_and_adds_overruns(client):
    limiter = make_limiter(client, charge_model="azure")
    under = granted(limiter.acquire("completion", DEPLOYMENT, 300, "a"))
    over = granted(limiter.acquire("completion", DEPLOYMENT, 100, "a"))
    assert limiter.report(under, 50, 50) == Settlement(0, 0)
    assert limiter.report(over, 100, 50) == Settlement(50, 0)
    assert limiter.status("completion", DEPLOYMENT).used_tokens == 450


def test_usage_charge_model_trues_up_to_actual_usage(client):
    limiter = make_limiter(client, charge_model="usage")
    request_id = granted(limiter.acquire("completion", DEPLOYMENT, 300, "a"))
    assert limiter.report(request_id, 50, 50) == Settlement(0, 200)
    status = limiter.status("completion", DEPLOYMENT)
    assert (status.used_tokens, status.available_tokens) == (100, 900)


def test_a_refund_after_its_bucket_left_the_window_creates_nothing(client):
    limiter = make_limiter(client, window_s=1, lock_ttl_s=30, charge_model="usage")
    late_report = granted(limiter.acquire("completion", DEPLOYMENT, 300, "a"))
    late_release = granted(limiter.acquire("completion", DEPLOYMENT, 200, "a"))
    time.sleep(1.1)
    assert limiter.report(late_report, 10, 10) == Settlement(0, 0)
    assert limiter.release(late_release) == Settlement(0, 0)
    status = limiter.status("completion", DEPLOYMENT)
    assert (status.used_tokens, status.locked_tokens, status.available_tokens) == (0, 0, 1000)


def test_refunds_reach_older_buckets_still_in_the_window(client):
    # 3 s window: 50 ms buckets, so each step below lands in a bucket of its own.
    limiter = make_limiter(client, window_s=3, charge_model="usage")
    reported = granted(limiter.acquire("completion", DEPLOYMENT, 100, "a"))
    time.sleep(0.06)
    released = granted(limiter.acquire("completion", DEPLOYMENT, 200, "b"))
    time.sleep(0.06)
    limiter.acquire("completion", DEPLOYMENT, 300, "c")
    time.sleep(0.06)
    assert limiter.report(reported, 40, 0) == Settlement(0, 60)
    assert limiter.release(released) == Settlement(0, 200)
    status = limiter.status("completion", DEPLOYMENT)
    assert (status.used_tokens, status.locked_tokens, status.available_tokens) == (40, 300, 660)
    assert status.apps == {"a": (40, 1), "c": (300, 1)}
    assert 2.8 < status.reset_time_seconds <= 3.05  # when the first bucket leaves


def test_release_gives_back_tokens_and_the_request(client):
    limiter = make_limiter(client, rpm=6)  # 1 per 10 s
    request_id = granted(limiter.acquire("completion", DEPLOYMENT, 400, "a"))
    assert not limiter.acquire("completion", DEPLOYMENT, 1, "a").allowed
    assert limiter.release(request_id) == Settlement(0, 400)
    assert limiter.acquire("completion", DEPLOYMENT, 1000, "a").allowed


def test_a_lock_is_settled_once(client):
    limiter = make_limiter(client)
    request_id = granted(limiter.acquire("completion", DEPLOYMENT, 100, "a"))
    limiter.report(request_id, 10, 10)
    before = snapshot(client)
    with pytest.raises(QuotaError, match="already reported or released"):
        limiter.report(request_id, 10, 10)
    with pytest.raises(QuotaError, match="already reported or released"):
        limiter.release(request_id)
    assert snapshot(client) == before


def test_an_unreported_lock_expires_and_stays_spent(client):
    limiter = make_limiter(client, lock_ttl_s=1)
    reported = granted(limiter.acquire("completion", DEPLOYMENT, 100, "a"))
    released = granted(limiter.acquire("completion", DEPLOYMENT, 200, "a"))
    time.sleep(1.05)
    with pytest.raises(QuotaError, match=r"expired: it was not reported within 1 s"):
        limiter.report(reported, 10, 10)
    with pytest.raises(QuotaError, match="expired"):
        limiter.release(released)
    status = limiter.status("completion", DEPLOYMENT)
    assert (status.used_tokens, status.locked_tokens, status.locked_requests) == (300, 0, 0)
    assert status.available_tokens == 700


def test_status_sweeps_expired_locks_without_a_report(client):
    limiter = make_limiter(client, lock_ttl_s=1)
    limiter.acquire("completion", DEPLOYMENT, 100, "a")
    assert limiter.status("completion", DEPLOYMENT).locked_tokens == 100
    time.sleep(1.05)
    status = limiter.status("completion", DEPLOYMENT)
    assert (status.locked_tokens, status.used_tokens) == (0, 100)


def test_an_id_never_issued_is_unknown(client):
    limiter = make_limiter(client)
    with pytest.raises(QuotaError, match="is unknown here"):
        limiter.report(f"completion/{DEPLOYMENT}/t99:r99", 1, 1)


def test_limits_changed_mid_window_apply_to_every_process_at_once(client):
    first, second = make_limiter(client, tpm=1000), QuotaLimiter(client, load_settings())
    assert first.acquire("completion", DEPLOYMENT, 600, "a").allowed
    second.set_limits("completion", DEPLOYMENT, tpm=500)
    lowered = first.acquire("completion", DEPLOYMENT, 1, "a")
    assert not lowered.allowed and "0 of 500 available" in reason(lowered)
    second.set_limits("completion", DEPLOYMENT, tpm=2000)
    assert first.acquire("completion", DEPLOYMENT, 1400, "a").allowed
    assert first.status("completion", DEPLOYMENT).tpm == 2000


def test_without_stored_limits_the_settings_defaults_apply(client):
    limiter = QuotaLimiter(client, load_settings(tpm_quota=500, rpm_quota=120))
    assert limiter.status("completion", "any-deployment")[2:4] == (500, 120)
    assert not limiter.acquire("completion", "any-deployment", 501, "a").allowed


def test_upstream_usage_we_did_not_see_is_charged_never_refunded(client):
    limiter = make_limiter(client, tpm=1000, rpm=60)
    limiter.acquire("completion", DEPLOYMENT, 100, "a")
    usage = limiter.observe_upstream(
        "completion", DEPLOYMENT, remaining_tokens=600, remaining_requests=5
    )  # of 10 per 10 s
    assert (usage.tokens, usage.requests) == (300, 4)
    assert limiter.observe_upstream("completion", DEPLOYMENT, remaining_tokens=900) == (0, 0)
    status = limiter.status("completion", DEPLOYMENT)
    assert status.available_tokens == 600
    assert status.apps["(external)"] == (300, 4)


def test_upstream_remaining_requests_are_set_against_the_ten_second_window(client):
    limiter = make_limiter(client, rpm=60)  # as upstream: 10 per 10 s
    for _ in range(3):
        limiter.acquire("completion", DEPLOYMENT, 1, "a")
    # Upstream counted our 3 of its 10: nobody else spent anything (not 60 - 3 - 7 = 50).
    assert limiter.observe_upstream("completion", DEPLOYMENT, remaining_requests=7).requests == 0
    # Now it has 4 left: another client sent 3.
    assert limiter.observe_upstream("completion", DEPLOYMENT, remaining_requests=4).requests == 3
    status = limiter.status("completion", DEPLOYMENT)
    assert status.available_requests == 4 and status.apps["(external)"].requests == 3


def test_all_status_lists_settings_pools_and_every_deployment_used(client):
    limiter = make_limiter(client)
    limiter.acquire("embedding", "ada-2", 10, "a")
    listed = {(status.pool, status.deployment) for status in limiter.all_status()}
    settings = load_settings()
    assert listed == {
        ("completion", DEPLOYMENT),
        ("embedding", "ada-2"),
        ("embedding", settings.embedding_engine),
        ("whisper", settings.whisper_engine),
    }


def test_processes_with_different_windows_are_refused_not_mixed(client):
    make_limiter(client, window_s=60).acquire("completion", DEPLOYMENT, 1, "a")
    with pytest.raises(QuotaError, match="every process must use the same QUOTA_WINDOW_SECONDS"):
        make_limiter(client, window_s=30).acquire("completion", DEPLOYMENT, 1, "a")


def test_processes_with_different_upstream_margins_are_refused_not_mixed(client):
    make_limiter(client, margin_s=1).acquire("completion", DEPLOYMENT, 1, "a")
    with pytest.raises(QuotaError, match="QUOTA_UPSTREAM_MARGIN_SECONDS"):
        make_limiter(client, margin_s=2).acquire("completion", DEPLOYMENT, 1, "a")


@pytest.mark.parametrize(
    "call",
    [
        lambda limiter: limiter.acquire("completion", DEPLOYMENT, -5, "a"),
        lambda limiter: limiter.acquire("completion", DEPLOYMENT, 10**12, "a"),
        lambda limiter: limiter.acquire("speech", DEPLOYMENT, 5, "a"),
        lambda limiter: limiter.report("nonsense", 1, 1),
        lambda limiter: limiter.report(f"completion/{DEPLOYMENT}/t1:r1", -1, 1),
        lambda limiter: limiter.report(f"completion/{DEPLOYMENT}/t1:r1", 1, 1, pool="embedding"),
        lambda limiter: limiter.observe_upstream("completion", DEPLOYMENT, remaining_tokens=-3),
        lambda limiter: limiter.set_limits("completion", DEPLOYMENT, tpm=-1),
    ],
)
def test_malformed_input_is_a_clear_value_error_and_changes_nothing(client, call):
    limiter = make_limiter(client)
    limiter.acquire("completion", DEPLOYMENT, 100, "a")
    before = snapshot(client)
    with pytest.raises(ValueError, match=r"must|unknown quota pool|not one acquire|belongs to"):
        call(limiter)
    assert snapshot(client) == before


@hypothesis_settings(max_examples=20, stateful_step_count=20, deadline=None)
class LimiterAgainstAModel(RuleBasedStateMachine):
    """Random acquire/report/release/observe/set_limits sequences, checked step by step against a
    plain Python model of the contract. Each example runs in well under the 10 s sub-window, so
    nothing leaves the window and the model needs no clock."""

    charge_model = "azure"

    def __init__(self) -> None:
        super().__init__()
        self.client = fakeredis.FakeRedis()
        self.limiter = make_limiter(self.client, charge_model=self.charge_model, tpm=1000, rpm=60)
        self.tpm, self.rpm = 1000, 60
        self.tokens = self.requests = 0
        self.open_locks: dict[str, int] = {}
        self.settled: list[str] = []

    def teardown(self) -> None:
        self.client.close()

    @rule(tokens=st.integers(0, 1200), app=st.sampled_from(["a", "b"]))
    def acquire(self, tokens, app):
        fits = (
            tokens <= self.tpm
            and self.tokens + tokens <= self.tpm
            and self.requests + 1 <= min(self.rpm, max(1, self.rpm // 6))
        )
        decision = self.limiter.acquire("completion", DEPLOYMENT, tokens, app)
        assert decision.allowed == fits, decision
        if fits:
            self.tokens += tokens
            self.requests += 1
            self.open_locks[granted(decision)] = tokens

    @precondition(lambda self: self.open_locks)
    @rule(data=st.data(), actual=st.integers(0, 800))
    def report(self, data, actual):
        request_id = data.draw(st.sampled_from(sorted(self.open_locks)))
        estimate = self.open_locks.pop(request_id)
        settlement = self.limiter.report(request_id, actual, 0)
        refund = estimate - actual if self.charge_model == "usage" and actual < estimate else 0
        assert settlement == Settlement(max(0, actual - estimate), refund)
        self.tokens += max(0, actual - estimate) - refund
        self.settled.append(request_id)

    @precondition(lambda self: self.open_locks)
    @rule(data=st.data())
    def release(self, data):
        request_id = data.draw(st.sampled_from(sorted(self.open_locks)))
        assert self.limiter.release(request_id) == Settlement(0, self.open_locks[request_id])
        self.tokens -= self.open_locks.pop(request_id)
        self.requests -= 1
        self.settled.append(request_id)

    @precondition(lambda self: self.settled)
    @rule(data=st.data())
    def settle_again(self, data):
        with pytest.raises(QuotaError, match="already reported or released"):
            self.limiter.release(data.draw(st.sampled_from(self.settled)))

    @rule(remaining=st.integers(0, 1000), remaining_requests=st.integers(0, 10))
    def observe(self, remaining, remaining_requests):
        external = max(0, self.tpm - self.tokens - remaining)
        # Upstream's remaining requests are per 10 s: the sub-window's RPM/6.
        external_requests = max(0, self.rpm // 6 - self.requests - remaining_requests)
        usage = self.limiter.observe_upstream(
            "completion",
            DEPLOYMENT,
            remaining_tokens=remaining,
            remaining_requests=remaining_requests,
        )
        assert usage == (external, external_requests)
        self.tokens += external
        self.requests += external_requests

    @rule(tpm=st.integers(1, 1500))
    def set_limits(self, tpm):
        self.limiter.set_limits("completion", DEPLOYMENT, tpm=tpm)
        self.tpm = tpm

    @invariant()
    def status_matches_the_model(self):
        status = self.limiter.status("completion", DEPLOYMENT)
        locked = sum(self.open_locks.values())
        assert status.used_tokens + status.locked_tokens == self.tokens
        assert status.locked_tokens == min(locked, self.tokens)
        assert status.available_tokens == max(0, self.tpm - self.tokens)
        assert status.locked_requests == len(self.open_locks)
        assert status.used_requests + status.locked_requests == self.requests
        assert sum(app.tokens for app in status.apps.values()) == self.tokens
        assert all(counter >= 0 for counter in status[4:11])


class UsageLimiterAgainstAModel(LimiterAgainstAModel):
    charge_model = "usage"


test_limiter_matches_the_model_azure = LimiterAgainstAModel.TestCase
test_limiter_matches_the_model_usage = UsageLimiterAgainstAModel.TestCase


def test_upstream_headers_are_weighed_against_the_window_as_it_was_when_the_request_was_sent(
    client,
):
    # The upstream counted `early` when `late` arrived; `late`'s answer comes back after `early`
    # left our window (a long completion). That is our own charge, not an outside client's.
    limiter = make_limiter(client, window_s=1, margin_s=0.1, tpm=1000)
    limiter.acquire("completion", DEPLOYMENT, 600, "a")
    time.sleep(0.1)  # a few buckets (1/60 s) later, so early leaves our window first
    late = limiter.acquire("completion", DEPLOYMENT, 100, "a")
    assert late.request_id is not None
    wait_until(
        lambda: limiter.status("completion", DEPLOYMENT).available_tokens == 900,
        timeout=10,
        what="the early charge to leave our window",
    )
    assert limiter.observe_upstream(
        "completion", DEPLOYMENT, remaining_tokens=300, request_id=late.request_id
    ) == (0, 0)
    # What the upstream counted beyond both is still booked.
    assert limiter.observe_upstream(
        "completion", DEPLOYMENT, remaining_tokens=100, request_id=late.request_id
    ) == (200, 0)
