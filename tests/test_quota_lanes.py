"""Lanes, spill-over, shares, cool-downs, restamps and clearable limits on fakeredis (which runs the
real Lua scripts): the decisions, not their speed. The integration tests against real servers are
in test_quota_integration.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import fakeredis
import pytest

from quota import QuotaError, QuotaLimiter, StaleLock
from settings import load_settings
from tests.support.quota import granted, reason, retry_after
from tests.support.waiting import wait_until

MODEL = "gpt-4o"
# A logical model served by two deployments with different limits, in spill-over order.
SPILL = json.dumps(
    [
        {"name": "gpt-4o-east", "tpm": 1000, "rpm": 600},
        {"name": "gpt-4o-west", "tpm": 500, "rpm": 600},
    ]
)


@pytest.fixture
def client() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    yield client
    client.close()


def make_limiter(client, *, window_s: float = 60, **settings: object) -> QuotaLimiter:
    options: dict[str, object] = {"quota_upstream_margin_s": 0, "tpm_quota": 1000, "rpm_quota": 600}
    options.update(settings)
    return QuotaLimiter(client, load_settings(**options), window_s=window_s)


# --- lanes ---------------------------------------------------------------------------------------
def test_batch_leaves_the_reserve_to_interactive_work_while_it_is_active(client):
    limiter = make_limiter(client, quota_interactive_reserve=0.1)
    assert limiter.acquire("completion", MODEL, 10, "voice", lane="interactive").allowed
    assert limiter.acquire("completion", MODEL, 890, "bridge").allowed  # 900 = 1000 - reserve
    refused = limiter.acquire("completion", MODEL, 1, "bridge")
    assert not refused.allowed and "kept for interactive calls" in reason(refused)
    assert reason(refused).startswith("Token limit would be exceeded")
    # The reserve is there for interactive work.
    assert limiter.acquire("completion", MODEL, 100, "voice", lane="interactive").allowed
    status = limiter.status("completion", MODEL)
    assert status.lanes["interactive"] == (110, 2) and status.lanes["batch"] == (890, 1)
    assert status.apps["voice"] == (110, 2) and status.reserve_active


def test_batch_takes_everything_when_interactive_work_was_never_seen(client):
    limiter = make_limiter(client, quota_interactive_reserve=0.1)
    assert limiter.acquire("completion", MODEL, 1000, "bridge").allowed
    assert not limiter.status("completion", MODEL).reserve_active


def test_the_reserve_returns_to_batch_after_the_idle_time(client):
    limiter = make_limiter(client, quota_interactive_reserve=0.2, quota_interactive_idle_s=0.5)
    assert limiter.acquire("completion", MODEL, 1, "voice", lane="interactive").allowed
    assert limiter.acquire("completion", MODEL, 799, "bridge").allowed
    refused = limiter.acquire("completion", MODEL, 100, "bridge")
    # Held back by the reserve only: it clears when interactive work has been idle 0.5 s.
    assert not refused.allowed and 0 < retry_after(refused) <= 0.5
    time.sleep(retry_after(refused))
    assert limiter.acquire("completion", MODEL, 100, "bridge").allowed


def test_requests_have_a_reserve_too(client):
    limiter = make_limiter(client, rpm_quota=60, quota_interactive_reserve=0.2)  # 10 per 10 s
    assert limiter.acquire("completion", MODEL, 1, "voice", lane="interactive").allowed
    admitted = sum(limiter.acquire("completion", MODEL, 1, "bridge").allowed for _ in range(12))
    assert admitted == 7  # 10 - 2 reserved - 1 interactive
    assert limiter.acquire("completion", MODEL, 1, "voice", lane="interactive").allowed


def test_an_unknown_lane_is_refused_before_redis(client):
    limiter = make_limiter(client)
    with pytest.raises(QuotaError, match="lane 'urgent' must be one of interactive, batch"):
        limiter.acquire("completion", MODEL, 1, "a", lane="urgent")


# --- shares --------------------------------------------------------------------------------------
def test_an_app_over_its_share_is_refused_while_others_still_fit(client):
    limiter = make_limiter(client, quota_app_shares="greedy=0.3")
    assert limiter.acquire("completion", MODEL, 200, "greedy").allowed
    assert limiter.acquire("completion", MODEL, 100, "greedy", lane="interactive").allowed
    refused = limiter.acquire("completion", MODEL, 1, "greedy")
    assert not refused.allowed and retry_after(refused) > 0
    assert reason(refused).startswith("Token limit would be exceeded: 1 tokens requested, 0 of 300")
    assert "app 'greedy' is held to its share 0.3" in reason(refused)
    # Others get the rest (less the interactive reserve: greedy's interactive call made it live).
    assert limiter.acquire("completion", MODEL, 600, "polite").allowed
    assert limiter.acquire("completion", MODEL, 100, "polite", lane="interactive").allowed


def test_a_request_larger_than_the_share_never_fits(client):
    limiter = make_limiter(client, quota_app_shares={"greedy": 0.5})
    decision = limiter.acquire("completion", MODEL, 600, "greedy")
    assert decision.retry_after_s is None and "its share 0.5" in reason(decision)


def test_a_share_frees_as_the_apps_own_charges_leave_the_window(client):
    limiter = make_limiter(client, window_s=1, quota_app_shares="greedy=0.5")
    assert limiter.acquire("completion", MODEL, 500, "greedy").allowed
    refused = limiter.acquire("completion", MODEL, 10, "greedy")
    assert not refused.allowed and retry_after(refused) <= 1.1
    time.sleep(retry_after(refused))
    assert limiter.acquire("completion", MODEL, 10, "greedy").allowed


@pytest.mark.parametrize("shares", ["greedy", "greedy=2", "greedy=0", "=0.5"])
def test_malformed_shares_stop_start_up_naming_the_setting(shares):
    with pytest.raises(ValueError, match="QUOTA_APP_SHARES"):
        load_settings(quota_app_shares=shares)


# --- spill-over ----------------------------------------------------------------------------------
def test_a_model_spills_over_to_its_next_deployment_in_order(client):
    limiter = make_limiter(client, openai_deployments=SPILL)
    first = limiter.acquire("completion", MODEL, 900, "a")
    assert first.allowed and first.deployment == "gpt-4o-east"
    assert first.request_id == "completion/gpt-4o/gpt-4o-east/t1:r1"
    second = limiter.acquire("completion", MODEL, 400, "a")
    assert second.allowed and second.deployment == "gpt-4o-west"
    assert limiter.acquire("completion", MODEL, 100, "a").deployment == "gpt-4o-east"
    refused = limiter.acquire("completion", MODEL, 200, "a")
    assert not refused.allowed and retry_after(refused) > 0
    statuses = {status.deployment: status for status in limiter.model_status("completion", MODEL)}
    assert statuses["gpt-4o-east"].locked_tokens == 1000
    assert statuses["gpt-4o-west"].locked_tokens == 400
    assert {status.model for status in statuses.values()} == {MODEL}
    # Each lock settles on its own deployment.
    limiter.release(granted(second))
    assert limiter.status("completion", "gpt-4o-west").locked_tokens == 0


def test_a_request_too_large_for_one_deployment_goes_to_one_it_fits(client):
    spill = json.dumps(
        [{"name": "small", "tpm": 100, "rpm": 60}, {"name": "large", "tpm": 5000, "rpm": 60}]
    )
    limiter = make_limiter(client, openai_deployments=spill)
    assert limiter.acquire("completion", MODEL, 1000, "a").deployment == "large"
    never = limiter.acquire("completion", MODEL, 6000, "a")
    assert never.retry_after_s is None and "more than the whole limit" in reason(never)


def test_the_refusal_is_the_deployment_that_clears_soonest(client):
    limiter = make_limiter(client, window_s=2, openai_deployments=SPILL)
    assert limiter.acquire("completion", MODEL, 1000, "a").deployment == "gpt-4o-east"
    time.sleep(0.5)
    assert limiter.acquire("completion", MODEL, 500, "a").deployment == "gpt-4o-west"
    refused = limiter.acquire("completion", MODEL, 100, "a")
    # East's charge is the older: it leaves first.
    assert refused.deployment == "gpt-4o-east" and retry_after(refused) < 1.7


def test_one_deployment_named_alone_is_counted_with_its_model(client):
    limiter = make_limiter(client, openai_deployments=SPILL)
    only_west = limiter.acquire("completion", "gpt-4o-west", 500, "a")
    assert only_west.allowed and only_west.deployment == "gpt-4o-west"
    assert not limiter.acquire("completion", "gpt-4o-west", 1, "a").allowed
    # The model sees west full and goes east.
    assert limiter.acquire("completion", MODEL, 500, "a").deployment == "gpt-4o-east"


def test_a_single_deployment_keeps_its_older_keys(client):
    limiter = make_limiter(client)
    limiter.acquire("completion", MODEL, 1, "a")
    assert client.exists(f"conduit:quota:{{completion:{MODEL}}}:state")


# --- cool-downs, restamps ------------------------------------------------------------------------
def test_a_rejected_request_keeps_its_charge_and_cools_its_deployment_down(client):
    limiter = make_limiter(client, openai_deployments=SPILL)
    decision = limiter.acquire("completion", MODEL, 300, "a")
    assert limiter.reject(granted(decision), 0.6) == (0, 0)
    east = limiter.status("completion", "gpt-4o-east")
    assert east.used_tokens == 300 and east.locked_tokens == 0 and 0.5 < east.cooldown_s <= 0.6
    # Skipped while it cools down; back afterwards.
    assert limiter.acquire("completion", MODEL, 10, "a").deployment == "gpt-4o-west"
    time.sleep(0.6)
    assert limiter.acquire("completion", MODEL, 10, "a").deployment == "gpt-4o-east"


def test_a_single_deployment_cooling_down_refuses_with_the_time_left(client):
    limiter = make_limiter(client)
    limiter.reject(granted(limiter.acquire("completion", MODEL, 10, "a")), 5)
    refused = limiter.acquire("completion", MODEL, 10, "a")
    assert not refused.allowed and 4 < retry_after(refused) <= 5
    assert reason(refused).startswith("API Rate limit would be exceeded")
    assert "cooling down" in reason(refused)
    assert limiter.status("completion", MODEL).cooldown_s > 4


def test_a_restamped_charge_is_counted_from_when_it_was_sent(client):
    limiter = make_limiter(client, window_s=1)
    decision = limiter.acquire("completion", MODEL, 600, "a")
    time.sleep(0.5)
    limiter.restamp(granted(decision))
    # Counted from now: still in the window 0.6 s later, when the original stamp would have left.
    time.sleep(0.6)
    assert not limiter.acquire("completion", MODEL, 600, "a").allowed
    limiter.report(granted(decision), 600)
    status = limiter.status("completion", MODEL)
    assert status.used_tokens == 600 and status.used_requests == 1


def test_a_lock_held_past_its_window_is_not_counted_again_unweighed(client):
    limiter = make_limiter(client, window_s=1)
    stale = granted(limiter.acquire("completion", MODEL, 600, "a"))
    wait_until(
        lambda: limiter.status("completion", MODEL).available_tokens == 1000, 10, "it to leave"
    )
    assert limiter.acquire("completion", MODEL, 1000, "b").allowed  # the window is full again
    # Sent only now: counting its 600 tokens again would put 1,600 in a window of 1,000.
    with pytest.raises(StaleLock, match="acquire again"):
        limiter.restamp(stale)
    status = limiter.status("completion", MODEL)
    assert status.used_tokens + status.locked_tokens == 1000
    with pytest.raises(QuotaError, match="already reported or released"):
        limiter.report(stale, 600)


# --- limits back to defaults ---------------------------------------------------------------------
def test_cleared_limits_fall_back_to_the_settings(client):
    limiter = make_limiter(client)
    limiter.set_limits("completion", MODEL, tpm=50)
    assert limiter.status("completion", MODEL)[2] == 50
    assert limiter.status("completion", MODEL).limits_from == "runtime"
    limiter.clear_limits("completion", MODEL)
    status = limiter.status("completion", MODEL)
    assert status.tpm == 1000 and status.limits_from == "settings"
    assert limiter.acquire("completion", MODEL, 900, "a").allowed


def test_each_spill_over_deployment_has_its_own_limits(client):
    limiter = make_limiter(client, openai_deployments=SPILL)
    limiter.set_limits("completion", "gpt-4o-west", tpm=50)
    assert limiter.status("completion", "gpt-4o-west").tpm == 50
    assert limiter.status("completion", "gpt-4o-east").tpm == 1000
    limiter.clear_limits("completion", "gpt-4o-west")
    assert limiter.status("completion", "gpt-4o-west").tpm == 500
    with pytest.raises(QuotaError, match="has 2 deployments: name one of gpt-4o-east, gpt-4o-west"):
        limiter.set_limits("completion", MODEL, tpm=5)
