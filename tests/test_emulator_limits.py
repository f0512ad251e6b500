"""The emulator's Azure-faithful limits, keys and faults: over HTTP with the SDK, and its limiter
and schema filler called directly (no server, fake clock)."""

from __future__ import annotations

import random
import time
from typing import Literal

import openai
import pytest
from pydantic import BaseModel, Field

from emulators.control import STAMP_HEADER
from emulators.jsonschema_fill import fill
from emulators.ratelimit import Limit, RateLimiter
from tests.support.emulator import RunningEmulator, ask

CHAT = "gpt-4o"
RATE_LIMIT_HEADERS = (
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-limit-requests",
    "x-ratelimit-reset-tokens",
    "x-ratelimit-reset-requests",
)


# --- over HTTP ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_spent_tpm_answers_429_with_azures_headers_until_retry_after(
    start_emulator,
) -> None:
    # 2 s window: the estimate (prompt + max_tokens 150) fits once in 200 tokens, not twice.
    emulator: RunningEmulator = start_emulator(
        limits={CHAT: {"tpm": 200, "rpm": 6000}}, EMULATOR_WINDOW_SECONDS="2"
    )
    client = emulator.azure_client()
    admitted = client.chat.completions.with_raw_response.create(
        model=CHAT, messages=ask("hello"), max_tokens=150
    )
    assert admitted.status_code == 200
    assert int(admitted.headers["x-ratelimit-remaining-tokens"]) < 50
    assert admitted.headers["x-ratelimit-limit-tokens"] == "200"

    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model=CHAT, messages=ask("hello"), max_tokens=150)
    headers = refused.value.response.headers
    assert all(name in headers for name in RATE_LIMIT_HEADERS), dict(headers)
    assert "exceeded token rate limit" in refused.value.message
    assert 0 < int(headers["retry-after-ms"]) <= 2000

    # Under test: waiting what retry-after-ms says is enough for the request to be admitted.
    time.sleep(int(headers["retry-after-ms"]) / 1000)
    again = client.chat.completions.create(model=CHAT, messages=ask("hello"), max_tokens=150)
    assert again.choices[0].message.content

    stats = emulator.stats()["deployments"][CHAT]
    assert (stats["requests"], stats["admitted"], stats["throttled"]) == (3, 2, 1)
    emulator.reset()
    assert emulator.stats()["deployments"] == {}


@pytest.mark.slow
def test_a_request_saying_when_it_was_counted_learns_how_much_later_it_was_charged(
    start_emulator,
) -> None:
    emulator: RunningEmulator = start_emulator()
    stamped_us = time.time_ns() // 1000 - 200_000  # counted 0.2 s ago by the client
    emulator.azure_client().chat.completions.create(
        model=CHAT, messages=ask("hi"), extra_headers={STAMP_HEADER: str(stamped_us)}
    )
    emulator.azure_client().chat.completions.create(model=CHAT, messages=ask("no stamp"))
    lags = emulator.stats()["stamp_to_charge_ms"]
    assert lags["count"] == 1
    # At least the 0.2 s; the rest is this loaded machine's HTTP round trip.
    assert 200 <= lags["p50"] == lags["max"] < 200 + 30_000
    emulator.reset()
    assert emulator.stats()["stamp_to_charge_ms"] == {"count": 0}


@pytest.mark.slow
def test_injected_faults_and_a_configured_key(start_emulator) -> None:
    emulator: RunningEmulator = start_emulator(EMULATOR_API_KEY="s3cret")
    with pytest.raises(openai.AuthenticationError):
        emulator.azure_client(api_key="wrong").chat.completions.create(
            model=CHAT, messages=ask("hi")
        )

    client = emulator.azure_client()
    emulator.configure(error_rate=1.0, error_status=503)
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model=CHAT, messages=ask("hi"))
    assert failed.value.status_code == 503

    emulator.configure(error_rate=0.0, stall_rate=1.0, stall_s=5.0)
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.5).chat.completions.create(model=CHAT, messages=ask("hi"))

    emulator.configure(stall_rate=0.0)
    assert client.chat.completions.create(model=CHAT, messages=ask("hi")).choices
    assert emulator.stats()["deployments"][CHAT]["faults"] == 2


# --- the limiter, with a fake clock ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_tokens_slide_out_of_the_window_after_exactly_the_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter({"d": Limit(tpm=100, rpm=6000)}, window_s=60, clock=clock)
    assert limiter.charge("d", 60).admitted
    clock.now += 30
    assert limiter.charge("d", 40).admitted
    refused = limiter.charge("d", 1)
    assert not refused.admitted and refused.reason == "tokens"
    assert refused.retry_after_s == pytest.approx(30)  # when the first 60 leave
    clock.now += 30
    assert limiter.charge("d", 60).admitted


def test_requests_are_limited_per_sixth_of_the_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter({"d": Limit(tpm=0, rpm=12)}, window_s=60, clock=clock)
    assert [limiter.charge("d", 0).admitted for _ in range(3)] == [True, True, False]
    refused = limiter.charge("d", 0)
    assert refused.reason == "requests" and refused.retry_after_s == pytest.approx(10)
    assert refused.headers()["x-ratelimit-limit-requests"] == "2"
    clock.now += 10
    assert limiter.charge("d", 0).admitted


def test_a_request_larger_than_the_limit_never_fits() -> None:
    limiter = RateLimiter({"d": Limit(tpm=100, rpm=60)}, window_s=60, clock=FakeClock())
    refused = limiter.charge("d", 101)
    assert not refused.admitted and refused.retry_after_s == 60
    assert refused.headers()["retry-after"] == "60"


# --- the schema filler ----------------------------------------------------------------------------


class Item(BaseModel):
    label: str = Field(min_length=4, max_length=12)
    price: float = Field(gt=0, le=5)
    quantity: int = Field(ge=2, le=3, multiple_of=1)


class Order(BaseModel):
    kind: Literal["online", "store"]
    items: list[Item] = Field(min_length=1, max_length=4)
    note: str | None
    nested: dict[str, list[int]]


def test_filled_values_validate_for_many_seeds() -> None:
    from openai.lib._pydantic import to_strict_json_schema

    schema = to_strict_json_schema(Order)
    for seed in range(100):
        Order.model_validate(fill(schema, random.Random(seed)))
