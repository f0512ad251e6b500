"""tasks/upstream.py's quota_call on the real redis-server: how each way a call ends settles its
lock. The SDK's errors are built as the SDK raises them (an httpx2 response, its HTTP client's,
with its headers); the request paths against a real emulator are in test_tasks_completion.py and
test_quota_integration.py."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2
import openai
import pytest

from tasks.clients import event_hooks
from tasks.connections import quota_limiter
from tasks.errors import PermanentError, QuotaExhausted, TransientError
from tasks.upstream import quota_call
from tests.support.quota import retry_after
from tests.support.waiting import wait_until

MODEL = "gpt-4o"
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
CHAT_ANSWER = {
    "id": "c",
    "object": "chat.completion",
    "created": 0,
    "model": MODEL,
    "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}
    ],
    "usage": {"prompt_tokens": 60, "completion_tokens": 40, "total_tokens": 100},
}
REQUEST = httpx2.Request("POST", "http://127.0.0.1:9/openai/deployments/gpt-4o/chat/completions")


@pytest.fixture(autouse=True)
def quota(redis_url, monkeypatch):
    monkeypatch.setenv("APP_TPM_QUOTA", "1000")
    monkeypatch.setenv("APP_RPM_QUOTA", "600")
    monkeypatch.setenv("QUOTA_WINDOW_SECONDS", "6")  # buckets of 0.1 s: a margin of 0.1 s
    monkeypatch.setenv("QUOTA_UPSTREAM_MARGIN_SECONDS", "0.1")
    monkeypatch.setenv("QUOTA_COOLDOWN_SECONDS", "3")


def status(deployment: str = MODEL):
    return quota_limiter().status("completion", deployment)


def http_error(kind: type[openai.APIStatusError], code: int, **headers: str) -> Exception:
    response = httpx2.Response(code, headers=headers, request=REQUEST, json={"error": {}})
    return kind("refused", response=response, body=None)


def test_a_refusal_holds_nothing_and_says_when():
    quota_limiter().set_limits("completion", MODEL, tpm=100)
    with pytest.raises(QuotaExhausted) as later:
        with quota_call("completion", MODEL, 60, app_id="a"):
            with quota_call("completion", MODEL, 60, app_id="a"):
                pass
    assert retry_after(later.value) > 0
    with pytest.raises(PermanentError, match="more than the whole limit"):
        with quota_call("completion", MODEL, 500, app_id="a"):
            pass


def test_a_reported_call_is_charged_its_usage():
    with quota_call("completion", MODEL, 100, app_id="a") as call:
        assert call.deployment == MODEL and call.client is not None
        call.report(80, 40)
    assert (status().used_tokens, status().locked_tokens) == (120, 0)


def test_a_call_left_without_a_report_keeps_its_estimate():
    with quota_call("completion", MODEL, 100, app_id="a"):
        pass
    assert (status().used_tokens, status().locked_tokens) == (100, 0)


def test_a_request_that_never_left_is_released():
    with pytest.raises(TransientError, match="cannot reach"):
        with quota_call("completion", MODEL, 100, app_id="a"):
            raise openai.APIConnectionError(request=REQUEST)
    assert status().used_tokens == 0 and status().used_requests == 0


def test_any_other_failure_after_sending_keeps_the_charge_and_is_raised_unchanged():
    with pytest.raises(KeyError):
        with quota_call("completion", MODEL, 100, app_id="a"):
            raise KeyError("a caller's bug")
    assert status().used_tokens == 100


def test_a_429_keeps_the_charge_cools_down_for_its_retry_after_and_books_its_headers():
    throttled = http_error(
        openai.RateLimitError,
        429,
        **{"retry-after-ms": "1500", "x-ratelimit-remaining-tokens": "200"},
    )
    with pytest.raises(TransientError, match="429") as raised:
        with quota_call("completion", MODEL, 100, app_id="a"):
            raise throttled
    assert raised.value.retry_after_s == 1.5
    after = status()
    assert after.apps["a"].tokens == 100 and after.locked_tokens == 0
    assert 1.0 < after.cooldown_s <= 1.5
    # The upstream says 200 are left of 1000: 700 more than ours were spent by someone else.
    assert after.apps["(external)"].tokens == 700
    with pytest.raises(QuotaExhausted, match="cooling down"):
        with quota_call("completion", MODEL, 10, app_id="a"):
            pass


def test_a_429_retry_after_longer_than_the_cap_cools_down_for_the_cap():
    with pytest.raises(TransientError):
        with quota_call("completion", MODEL, 100, app_id="a"):
            raise http_error(openai.RateLimitError, 429, **{"retry-after": "20"})
    assert 2.5 < status().cooldown_s <= 3


def test_a_5xx_cools_down_a_deployment_only_when_its_model_has_another(monkeypatch):
    with pytest.raises(TransientError, match="503"):
        with quota_call("completion", MODEL, 100, app_id="a"):
            raise http_error(openai.InternalServerError, 503)
    assert status().used_tokens == 100 and status().cooldown_s == 0

    deployments = [
        {"name": "east", "tpm": 1000, "rpm": 600},
        {"name": "west", "tpm": 1000, "rpm": 600},
    ]
    monkeypatch.setenv("APP_OPENAI_DEPLOYMENTS", json.dumps(deployments))
    monkeypatch.setenv("QUOTA_ERROR_COOLDOWN_SECONDS", "2")
    from settings import get_settings

    get_settings.cache_clear()
    with pytest.raises(TransientError):
        with quota_call("completion", MODEL, 100, app_id="a") as call:
            assert call.deployment == "east"
            raise http_error(openai.InternalServerError, 500)
    assert 1.5 < status("east").cooldown_s <= 2
    with quota_call("completion", MODEL, 100, app_id="a") as call:
        assert call.deployment == "west"


def test_a_slow_path_to_sending_moves_the_charge_to_the_send_time(redis_client):
    with quota_call("completion", MODEL, 100, app_id="a") as call:
        locks_key = quota_limiter().protocol.keys("completion", MODEL)[1]
        lock_id = call.request_id.rsplit("/t", 1)[1].split(":")[0]
        locked_in = int(redis_client.hget(locks_key, lock_id).split("|")[0])
        time.sleep(0.3)  # longer than the 0.1 s margin
        call.sending()
        sent_in = int(redis_client.hget(locks_key, lock_id).split("|")[0])
        call.report(100)
    assert sent_in >= locked_in + 3
    assert (status().used_tokens, status().used_requests) == (100, 1)


def test_a_send_within_half_the_margin_keeps_its_stamp_and_a_later_one_is_restamped(
    monkeypatch,
):
    # The margin covers stamp to arrival: half for the path to the wire, half for the wire, so a
    # send later than half of it is counted from when it leaves. 1 s here: a loaded machine's
    # path from acquire to sending() stays well inside the first half.
    monkeypatch.setenv("QUOTA_UPSTREAM_MARGIN_SECONDS", "1")
    from settings import get_settings

    get_settings.cache_clear()
    with quota_call("completion", MODEL, 100, app_id="a") as call:
        acquired_us = call.stamped_us
        call.sending()  # at once: kept
        assert call.stamped_us == acquired_us
        call.report(100)
    with quota_call("completion", MODEL, 100, app_id="a") as call:
        acquired_us = call.stamped_us
        time.sleep(0.6)  # more than half the margin, less than all of it
        call.sending()
        assert call.stamped_us >= acquired_us + 500_000
        call.report(100)


def test_a_call_held_past_its_window_acquires_again_before_it_sends():
    with pytest.raises(QuotaExhausted, match="acquire again") as again:
        with quota_call("completion", MODEL, 100, app_id="a") as call:
            # The window is 6 s here: the charge leaves it before anything was sent.
            wait_until(
                lambda: status().available_tokens == 1000, timeout=30, what="the charge to leave"
            )
            call.sending()
    assert again.value.retry_after_s == 0.0
    assert status().locked_tokens == 0  # the lock is finished, nothing left held


def test_a_slow_sdk_after_sending_moves_the_charge_to_when_the_request_leaves(
    redis_client, monkeypatch
):
    # A cold worker's first call spends seconds inside the SDK (first import, client, request)
    # after call.sending(): the charge must be counted from when the request is on the wire.
    locks_key = quota_limiter().protocol.keys("completion", MODEL)[1]
    on_the_wire: list[int] = []

    def upstream(request: httpx2.Request) -> httpx2.Response:
        lock_id = current.request_id.rsplit("/t", 1)[1].split(":")[0]
        on_the_wire.append(int(redis_client.hget(locks_key, lock_id).split("|")[0]))
        return httpx2.Response(200, json=CHAT_ANSWER)

    client = openai.OpenAI(
        base_url="http://upstream.test/v1",
        api_key="unused",
        max_retries=0,
        http_client=httpx2.Client(
            transport=httpx2.MockTransport(upstream), event_hooks=event_hooks()
        ),
    )
    monkeypatch.setattr("tasks.upstream.deployment_client", lambda pool, settings: client)
    with quota_call("completion", MODEL, 100, app_id="a") as current:
        locks = redis_client.hget(locks_key, current.request_id.rsplit("/t", 1)[1].split(":")[0])
        locked_in = int(locks.split("|")[0])
        current.sending()
        time.sleep(0.3)  # the behaviour under test: the SDK's cold path, longer than the margin
        current.client.chat.completions.create(model=current.deployment, messages=MESSAGES)
        current.report(100)
    assert on_the_wire and on_the_wire[0] >= locked_in + 3
    assert (status().used_tokens, status().used_requests) == (100, 1)


def test_a_429s_excess_leaves_our_window_when_its_retry_after_says():
    # A cold upstream that counted our own burst late is full for a moment (its retry-after),
    # not for a window: what it counts beyond us is booked to leave when it has room again.
    with pytest.raises(TransientError, match="429"):
        with quota_call("completion", MODEL, 100, app_id="a"):
            raise http_error(
                openai.RateLimitError,
                429,
                **{"retry-after-ms": "300", "x-ratelimit-remaining-tokens": "200"},
            )
    assert status().apps["(external)"].tokens == 700
    # A window is 6 s here; the excess is gone within a second of the 0.3 s the upstream said.
    wait_until(lambda: "(external)" not in status().apps, timeout=3, what="the excess to leave")
    assert status().apps["a"].tokens == 100
