"""quota.sansio: validation, request ids, limits and reply parsing, with no Redis at all."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quota import AppUsage, QuotaError
from quota.sansio import (
    MAX_TOKENS,
    QuotaProtocol,
    format_request_id,
    parse_request_id,
)
from settings import load_settings


@pytest.fixture
def protocol() -> QuotaProtocol:
    return QuotaProtocol(load_settings(), window_s=60)


deployments = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)


@given(
    pool=st.sampled_from(["completion", "embedding", "whisper"]),
    deployment=deployments,
    model=deployments,
    lock_id=st.integers(min_value=1, max_value=2**53),
)
def test_request_id_round_trips_in_the_older_token_colon_rate_shape(
    pool, deployment, model, lock_id
):
    request_id = format_request_id(pool, model, deployment, lock_id)
    token_id, rate_id = request_id.split(":")
    assert token_id.endswith(f"/t{lock_id}") and rate_id == f"r{lock_id}"
    assert parse_request_id(request_id) == (pool, model, deployment, str(lock_id))


def test_a_deployment_named_like_its_model_keeps_the_older_request_id():
    assert format_request_id("completion", "gpt-4o", "gpt-4o", 7) == "completion/gpt-4o/t7:r7"
    assert format_request_id("completion", "gpt-4o", "east", 7) == "completion/gpt-4o/east/t7:r7"


@pytest.mark.parametrize(
    "request_id",
    [
        None,
        "",
        "abc",
        "completion/gpt-4o/t1:r2",
        "chat/gpt-4o/t1:r1",
        "completion/gpt-4o/t1",
        "completion//t1:r1",
        "completion/a/b/c/t1:r1",
    ],
)
def test_a_request_id_acquire_never_returned_is_refused(request_id):
    with pytest.raises(QuotaError, match="not one acquire"):
        parse_request_id(request_id)


def test_report_refuses_an_id_from_another_pool(protocol):
    request_id = format_request_id("completion", "gpt-4o", "gpt-4o", 7)
    with pytest.raises(QuotaError, match="belongs to the completion pool, not embedding"):
        protocol.report(request_id, 1, 1, pool="embedding")


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (-1, "tokens must be a whole number"),
        (MAX_TOKENS + 1, "tokens must be a whole number"),
        (1.5, "tokens must be a whole number"),
        (True, "tokens must be a whole number"),
        ("10", "tokens must be a whole number"),
    ],
)
def test_malformed_token_counts_are_refused_before_redis(protocol, tokens, message):
    with pytest.raises(ValueError, match=message):
        protocol.acquire("completion", "gpt-4o", tokens, "app")


@pytest.mark.parametrize(
    ("pool", "deployment", "app_id", "message"),
    [
        ("chat", "gpt-4o", "app", "unknown quota pool 'chat'"),
        ("completion", "gpt-4o}:x{", "app", "not an Azure OpenAI deployment name"),
        ("completion", "", "app", "not an Azure OpenAI deployment name"),
        ("completion", "gpt-4o", "a,b", "app_id 'a,b' must be"),
        ("completion", "gpt-4o", "", "app_id '' must be"),
    ],
)
def test_unknown_pools_and_unsafe_names_are_refused(protocol, pool, deployment, app_id, message):
    with pytest.raises(QuotaError, match=message):
        protocol.acquire(pool, deployment, 10, app_id)


def test_keys_share_one_hash_tag_per_pool_and_deployment(protocol):
    keys = protocol.keys("completion", "gpt-4o")
    assert all(key.startswith("conduit:quota:{completion:gpt-4o}:") for key in keys)
    assert len(set(keys)) == 3


@pytest.mark.parametrize("buckets", [60, 120, 6])
@pytest.mark.parametrize("window_s", [60, 2, 2.5, 0.7])
def test_buckets_never_make_the_window_shorter_than_asked(window_s, buckets):
    protocol = QuotaProtocol(load_settings(quota_window_buckets=buckets), window_s=window_s)
    assert protocol.bucket_us * buckets >= window_s * 1_000_000
    assert protocol.bucket_us * buckets < window_s * 1_000_000 + buckets


def test_the_bucket_count_must_split_into_sixths():
    with pytest.raises(ValueError, match="QUOTA_WINDOW_BUCKETS"):
        load_settings(quota_window_buckets=100)


@pytest.mark.parametrize(
    ("window_s", "margin_s", "margin_buckets"),
    [
        (60, 1.0, 1),
        (60, 0.3, 1),
        (20, 1.0, 3),
        (11, 1.0, 6),
        (60, 0, 0),
        (20, 0.5, 2),
        (60, 0.5, 1),
    ],
)
def test_the_upstream_margin_is_rounded_up_to_whole_buckets(window_s, margin_s, margin_buckets):
    protocol = QuotaProtocol(load_settings(quota_upstream_margin_s=margin_s), window_s=window_s)
    assert protocol.margin_buckets == margin_buckets
    assert protocol.margin_buckets * protocol.bucket_us >= margin_s * 1_000_000


@pytest.mark.parametrize(
    ("pool", "tpm", "rpm", "message"),
    [
        ("completion", None, None, "needs tpm, rpm or both"),
        ("completion", 0, None, "tpm must be a whole number of at least 1"),
        ("completion", None, -5, "rpm must be a whole number of at least 1"),
        ("whisper", 1000, None, "requests only"),
    ],
)
def test_set_limits_refuses_limits_that_cannot_work(protocol, pool, tpm, rpm, message):
    with pytest.raises(QuotaError, match=message):
        protocol.limits_mapping(pool, tpm, rpm)


def test_status_reply_becomes_the_older_fields_with_a_per_app_split(protocol):
    bucket_us = protocol.bucket_us
    now_us = 1000 * bucket_us + 250
    # Bucket 990 was closed into fields; 1000 is open, its charges in one string.
    state = [
        "totals",
        "1 2 3",
        "990:t",
        "300",
        "990:r",
        "2",
        "990:apps",
        "feedback,idle",
        "990:t:feedback",
        "300",
        "990:r:feedback",
        "2",
        "990:t:idle",
        "0",
        "990:r:idle",
        "0",
        "tpm",
        "1000",
        "cool",
        str(now_us + 2_500_000),
    ]
    # now, tpm, rpm, sub_rpm, tokens, requests, sub_requests, locked tokens, locked requests,
    # open bucket, its charges (an interactive one), the state hash
    reply = [now_us, 1000, 60, 10, 350, 3, 1, 50, 1, 1000, "reasoner!i 50 1", state]
    status = protocol.status("completion", "gpt-4o").parse(reply)
    assert status.as_dict() == {
        "pool": "completion",
        "deployment": "gpt-4o",
        "tpm": 1000,
        "rpm": 60,
        "available_tokens": 650,
        "used_tokens": 300,
        "locked_tokens": 50,
        "available_requests": 9,
        "used_requests": 2,
        "locked_requests": 1,
        # The oldest charge (bucket 990) leaves when the window and the margin have passed it.
        "reset_time_seconds": (
            (990 + protocol.window_buckets + protocol.margin_buckets + 1) * bucket_us - now_us
        )
        / 1e6,
        "apps": {
            "feedback": {"tokens": 300, "requests": 2},
            "reasoner": {"tokens": 50, "requests": 1},
        },
        "lanes": {
            "interactive": {"tokens": 50, "requests": 1},
            "batch": {"tokens": 300, "requests": 2},
        },
        "model": "gpt-4o",
        "limits_from": "runtime",
        "cooldown_s": 2.5,
        "reserve_active": False,
    }
    assert status.apps["feedback"] == AppUsage(300, 2)


def test_refusal_reasons_keep_the_older_wording(protocol):
    def refusal(pool, kind, used, limit):
        reply = [0, 0, 1_500_000, kind, used, limit, 1, ""]
        return protocol.acquire(pool, "d", 200, "app").parse(reply)[0]

    tokens = refusal("completion", "tokens", 900, 1000)
    assert tokens.reason.startswith("Token limit would be exceeded: 200 tokens requested, 100 of")
    assert tokens.retry_after_s == 1.5 and not tokens.allowed and tokens.request_id is None
    assert refusal("embedding", "requests", 60, 60).reason.startswith(
        "API Rate limit would be exceeded: 60 of 60 requests in the last 60 s"
    )
    assert refusal("completion", "sub_requests", 10, 10).reason.endswith(
        "10 of 10 requests in the last 10 s; retry in 1.50 s"
    )
    assert refusal("whisper", "requests", 15, 15).reason.startswith("Whisper rate limit exceeded")
    never = protocol.acquire("completion", "d", 2000, "app").parse(
        [0, 0, -1, "too_large", 0, 1000, 1, ""]
    )
    assert never[0].retry_after_s is None and "split the request" in never[0].reason
