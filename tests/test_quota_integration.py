"""Lanes, shares and spill-over end to end: real redis-server, real threads, and for spill-over two
real emulator processes, one per deployment, reached through tasks/ as a worker reaches Azure.

Every wait polls a condition with a deadline; nothing asserts how fast anything ran.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from quota import QuotaLimiter
from settings import load_settings
from tasks.completion import chat_completion
from tasks.connections import quota_limiter
from tasks.errors import QuotaExhausted, TransientError
from tests.support.emulator import LOADED_MARGIN_ENV
from tests.support.quota import granted, retry_after

pytestmark = pytest.mark.slow

WINDOW_S = 2
TPM, RPM = 2000, 6000
CHUNK = 50  # tokens per batch request: the limit is a whole number of them
BATCH_THREADS = 16
DEADLINE_SECS = 30.0
POLL_SECS = 0.02


def wait_until(check: Callable[[], bool], what: str, timeout: float = DEADLINE_SECS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(POLL_SECS)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.fixture
def limiter(redis_url: str) -> Iterator[QuotaLimiter]:
    settings = load_settings(
        quota_upstream_margin_s=0,
        tpm_quota=TPM,
        rpm_quota=RPM,
        quota_interactive_reserve=0.1,
        quota_interactive_idle_s=0.8,
        quota_app_shares="greedy=0.3",
    )
    client = redis.Redis.from_url(redis_url)
    yield QuotaLimiter(client, settings, window_s=WINDOW_S)
    client.close()


class Hammer:
    """``threads`` threads acquiring ``tokens`` for ``app`` until stopped, reporting at once;
    refused, they nap a little (at most 20 ms) and ask again, as greedy clients do."""

    def __init__(self, limiter: QuotaLimiter, app: str, threads: int, tokens: int = CHUNK):
        self.limiter, self.app, self.tokens = limiter, app, tokens
        self.admitted = self.refused = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            decision = self.limiter.acquire("completion", "gpt-4o", self.tokens, self.app)
            with self._lock:
                if decision.allowed:
                    self.admitted += 1
                else:
                    self.refused += 1
            if decision.allowed:
                self.limiter.report(granted(decision), self.tokens)
            else:
                self._stop.wait(min(decision.retry_after_s or 0.02, 0.02))

    def __enter__(self) -> Hammer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def in_window(limiter: QuotaLimiter) -> int:
    status = limiter.status("completion", "gpt-4o")
    return status.used_tokens + status.locked_tokens


def interactive_call(limiter: QuotaLimiter) -> None:
    decision = limiter.acquire("completion", "gpt-4o", 20, "voice", lane="interactive")
    assert decision.allowed, decision.reason
    limiter.report(granted(decision), 20)


def test_interactive_calls_get_in_at_once_behind_a_saturating_batch(limiter):
    # A voice call is under way (its first turn): the reserve is held from here on. (The first
    # interactive call after an idle period may wait, as batch was free to use everything.)
    interactive_call(limiter)
    with Hammer(limiter, "bridge", BATCH_THREADS) as batch:
        wait_until(lambda: batch.refused > 100, "batch saturates the deployment")
        # One interactive call every 250 ms for two windows: at most 9 calls of 20 tokens in any
        # window, inside its 200-token reserve; each must be admitted on its first ask.
        for _ in range(16):
            interactive_call(limiter)
            time.sleep(0.25)
        status = limiter.status("completion", "gpt-4o")
        assert status.reserve_active and status.lanes["interactive"].tokens > 0
        # Batch kept to the limit less the reserve meanwhile.
        assert status.lanes["batch"].tokens <= TPM - TPM // 10

        # Interactive work goes quiet: after the idle time batch alone reaches the whole limit.
        wait_until(lambda: in_window(limiter) == TPM, "batch reaches the whole limit")
        assert not limiter.status("completion", "gpt-4o").reserve_active


def test_a_greedy_app_is_held_to_its_share_while_another_gets_the_rest(limiter):
    share = int(TPM * 0.3)
    with Hammer(limiter, "greedy", 8) as greedy:
        wait_until(lambda: greedy.refused > 50, "greedy asks beyond its share")
        wait_until(lambda: in_window(limiter) == share, "greedy holds exactly its share")
        with Hammer(limiter, "polite", 4) as polite:
            wait_until(lambda: in_window(limiter) == TPM, "polite takes the rest")
            for _ in range(10):  # greedy, still asking, never goes past its share
                status = limiter.status("completion", "gpt-4o")
                assert status.apps["greedy"].tokens <= share
                time.sleep(0.1)
            assert polite.admitted >= (TPM - share) // CHUNK


# --- spill-over through tasks/ and two emulators -------------------------------------------------
EAST, WEST = "gpt-4o-east", "gpt-4o-west"
EMULATOR_WINDOW_S = 6
MESSAGES = [{"role": "user", "content": "Name a colour."}]
MAX_TOKENS = 40


@pytest.fixture
def two_deployments(start_emulator, redis_url, tiktoken_cache, monkeypatch):
    """gpt-4o served by two emulators with different TPM, in spill-over order east, west."""
    limits = {EAST: (1500, 600), WEST: (900, 600)}
    emulators = {
        name: start_emulator(
            limits={name: {"tpm": tpm, "rpm": rpm}},
            EMULATOR_WINDOW_SECONDS=str(EMULATOR_WINDOW_S),
        )
        for name, (tpm, rpm) in limits.items()
    }
    deployments = [
        {
            "name": name,
            "tpm": tpm,
            "rpm": rpm,
            "endpoint": emulators[name].url,
            "api_key": emulators[name].api_key,
        }
        for name, (tpm, rpm) in limits.items()
    ]
    monkeypatch.setenv("APP_OPENAI_DEPLOYMENTS", json.dumps(deployments))
    monkeypatch.setenv("QUOTA_WINDOW_SECONDS", str(EMULATOR_WINDOW_S))
    monkeypatch.setenv("QUOTA_ERROR_COOLDOWN_SECONDS", "2")
    for name, value in LOADED_MARGIN_ENV.items():
        monkeypatch.setenv(name, value)
    return emulators


def complete_waiting(deadline: float) -> str:
    """One chat completion, waiting out quota refusals as a task would."""
    while True:
        try:
            return chat_completion(MESSAGES, max_tokens=MAX_TOKENS)["model"]
        except QuotaExhausted as refused:
            assert time.monotonic() + retry_after(refused) < deadline, "quota never had room"
            time.sleep(retry_after(refused))


def stats(emulator, name: str) -> dict[str, int]:
    return emulator.stats()["deployments"].get(name, {"admitted": 0, "throttled": 0, "faults": 0})


def test_a_model_spills_over_both_deployments_without_a_429(two_deployments):
    deadline = time.monotonic() + 120
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(8):
                complete_waiting(deadline)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    east, west = stats(two_deployments[EAST], EAST), stats(two_deployments[WEST], WEST)
    # 64 calls of ~50 tokens outgrow east's 1500 per window: west took the overflow.
    assert east["admitted"] > 0 and west["admitted"] > 0
    assert east["admitted"] + west["admitted"] == 64
    assert east["throttled"] == 0 and west["throttled"] == 0


def test_a_failing_deployment_is_skipped_for_its_cool_down_and_comes_back(two_deployments):
    limiter = quota_limiter()
    east, west = two_deployments[EAST], two_deployments[WEST]
    west.configure(error_rate=1.0, error_status=503)
    limiter.set_limits("completion", EAST, tpm=1)  # east takes nothing: the call goes west
    with pytest.raises(TransientError, match="503"):
        chat_completion(MESSAGES, max_tokens=MAX_TOKENS)
    assert stats(west, WEST)["faults"] == 1
    assert limiter.status("completion", WEST).cooldown_s > 0

    # East still takes nothing and west cools down: quota refuses here, west is not called.
    with pytest.raises(QuotaExhausted, match="cooling down") as refused:
        chat_completion(MESSAGES, max_tokens=MAX_TOKENS)
    assert 0 < retry_after(refused.value) <= 2
    assert stats(west, WEST)["faults"] == 1
    # East back: it serves meanwhile.
    limiter.clear_limits("completion", EAST)
    chat_completion(MESSAGES, max_tokens=MAX_TOKENS)
    assert stats(east, EAST)["admitted"] == 1

    west.configure(error_rate=0.0)
    wait_until(lambda: limiter.status("completion", WEST).cooldown_s == 0, "west cools down")
    limiter.set_limits("completion", EAST, tpm=1)
    # (The emulator counts the request it failed as admitted: it charged it, as Azure would.)
    before = stats(west, WEST)["admitted"]
    chat_completion(MESSAGES, max_tokens=MAX_TOKENS)
    assert stats(west, WEST)["admitted"] == before + 1 and stats(west, WEST)["faults"] == 1
