"""Does a voice turn get through behind a saturating batch, and does batch still use the rest?

    python -m bench.quota_lanes        -> bench/results/quota_lanes.json

One emulator deployment and quota/ counting in the same (shortened) window, a local redis-server.
BATCH_THREADS threads send chat completions through tasks/ (``call_within_quota``, lane
``batch``) back to back, waiting out quota refusals, for the whole run: the deployment is
saturated. Meanwhile one interactive caller asks every INTERACTIVE_EVERY_S (``quota_call``, lane
``interactive``), as a voice agent's turns would.

Figures (measured after the first window, while batch saturates):

- ``interactive_wait_p50_ms`` / ``interactive_wait_p95_ms``: from asking to being admitted
  (quota refusals waited out), per interactive call; target p95 <= 50 ms;
- ``batch_utilization``: tokens the upstream accepted from batch in the trailing window ÷ what
  interactive left of the limit (T minus the interactive tokens accepted in that window),
  averaged over the measured windows; target >= 0.9. quota/ keeps each charge counted for the
  upstream margin past the window and holds the interactive reserve (QUOTA_INTERACTIVE_RESERVE)
  back from batch while interactive work is active, and both cost batch some of it;
- ``upstream_429``: answers the emulator refused; target 0.
"""

from __future__ import annotations

import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from bench.report import percentile, write_result
from settings import load_settings
from settings.redis_server import RedisServer

DEPLOYMENT = "bench-lanes"
TPM = 30_000  # per emulator window
WINDOW_SECS = 20
MEASURED_WINDOWS = 3
BATCH_THREADS = 16
INTERACTIVE_EVERY_S = 0.5
# A voice turn's share: kept free for interactive calls while they come.
RESERVE = 0.05
FIRST_TOKEN_MS = 50
TOKEN_MS = 0.5
SAMPLE_EVERY_SECS = 0.5
INTERACTIVE_APP, BATCH_APP = "voice", "bridge"


def batch_request(rng: random.Random) -> tuple[list[dict[str, str]], int]:
    words = "quota window token request deployment limit answer prompt worker".split()
    prompt = " ".join(rng.choices(words, k=rng.randint(20, 300)))
    return [{"role": "user", "content": prompt}], rng.choice([50, 100, 200])


INTERACTIVE_MESSAGES: list[Any] = [
    {"role": "user", "content": "Caller asks: when is my appointment?"}
]
INTERACTIVE_MAX_TOKENS = 30


class Run:
    """Shared counters of one run; threads append under the lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.interactive_waits: list[tuple[float, float]] = []  # (asked at, wait s)
        self.errors: list[BaseException] = []


def batch_worker(run: Run, seed: int) -> None:
    from tasks.completion import chat_completion
    from tasks.errors import QuotaExhausted

    rng = random.Random(seed)
    while not run.stop.is_set():
        messages, max_tokens = batch_request(rng)
        try:
            chat_completion(messages, max_tokens=max_tokens, app_id=BATCH_APP)
        except QuotaExhausted as refused:
            run.stop.wait(refused.retry_after_s)
        except Exception as error:  # noqa: BLE001 - counted, the run goes on
            with run.lock:
                run.errors.append(error)


def interactive_caller(run: Run) -> None:
    from tasks.errors import QuotaExhausted
    from tasks.token_estimates import estimate_tokens
    from tasks.upstream import quota_call

    estimate = estimate_tokens(INTERACTIVE_MESSAGES, DEPLOYMENT, INTERACTIVE_MAX_TOKENS)
    while not run.stop.is_set():
        asked = time.monotonic()
        while not run.stop.is_set():
            try:
                with quota_call(
                    "completion", DEPLOYMENT, estimate, app_id=INTERACTIVE_APP, lane="interactive"
                ) as call:
                    admitted = time.monotonic()
                    call.sending()
                    response = call.client.chat.completions.with_raw_response.create(
                        model=call.deployment,
                        messages=INTERACTIVE_MESSAGES,
                        max_tokens=INTERACTIVE_MAX_TOKENS,
                    )
                    call.observe(response.headers)
                    usage = response.parse().usage
                    if usage is not None:
                        call.report(usage.prompt_tokens, usage.completion_tokens)
                with run.lock:
                    run.interactive_waits.append((asked, admitted - asked))
                break
            except QuotaExhausted as refused:
                run.stop.wait(refused.retry_after_s)
            except Exception as error:  # noqa: BLE001 - counted, the run goes on
                with run.lock:
                    run.errors.append(error)
                break
        run.stop.wait(max(0.0, asked + INTERACTIVE_EVERY_S - time.monotonic()))


def batch_utilization(
    samples: list[tuple[float, int]], admitted: list[float], per_call: int, window_s: float
) -> float:
    """Mean over the samples a window after the first of: batch tokens accepted in the trailing
    window ÷ (TPM minus interactive tokens accepted in it). The emulator counts one total per
    deployment; an interactive call (always the same request) is charged ``per_call``, so the
    interactive part of a window is ``per_call`` × the interactive calls admitted in it."""
    times = [t for t, _ in samples]
    ratios = []
    for t, total in samples:
        if t - times[0] < window_s:
            continue
        earlier = samples[max(i for i, at in enumerate(times) if at <= t - window_s)]
        interactive = per_call * sum(earlier[0] < at <= t for at in admitted)
        batch = total - earlier[1] - interactive
        ratios.append(batch / (TPM - interactive))
    return sum(ratios) / len(ratios)


def charge_per_interactive_call(emulator: Any) -> int:
    """What the emulator charges for the interactive request: send it once and look."""
    emulator.reset()
    emulator.azure_client().chat.completions.create(
        model=DEPLOYMENT, messages=INTERACTIVE_MESSAGES, max_tokens=INTERACTIVE_MAX_TOKENS
    )
    charged = emulator.stats()["deployments"][DEPLOYMENT]["tokens_charged"]
    emulator.reset()
    return int(charged)


def run_once(emulator: Any, redis_url: str) -> dict[str, Any]:
    per_call = charge_per_interactive_call(emulator)
    redis.Redis.from_url(redis_url).flushall()
    run = Run()
    threads = [threading.Thread(target=interactive_caller, args=(run,))]
    threads += [threading.Thread(target=batch_worker, args=(run, n)) for n in range(BATCH_THREADS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    samples: list[tuple[float, int]] = []

    def stats() -> dict[str, int]:
        return emulator.stats()["deployments"].get(DEPLOYMENT, {})

    try:
        while time.monotonic() - started < (1 + MEASURED_WINDOWS) * WINDOW_SECS:
            samples.append((time.monotonic(), stats().get("tokens_charged", 0)))
            time.sleep(SAMPLE_EVERY_SECS)
    finally:
        run.stop.set()
        for thread in threads:
            thread.join()
    measured = [wait for asked, wait in run.interactive_waits if asked - started >= WINDOW_SECS]
    admitted = [asked + wait for asked, wait in run.interactive_waits]
    return {
        "deployment_tpm": TPM,
        "window_s": WINDOW_SECS,
        "measured_windows": MEASURED_WINDOWS,
        "batch_threads": BATCH_THREADS,
        "interactive_every_s": INTERACTIVE_EVERY_S,
        "interactive_reserve": RESERVE,
        "quota_upstream_margin_s": load_settings().quota_upstream_margin_s,
        "interactive_calls": len(measured),
        "interactive_wait_p50_ms": round(percentile(measured, 0.5) * 1000, 1),
        "interactive_wait_p95_ms": round(percentile(measured, 0.95) * 1000, 1),
        "interactive_wait_max_ms": round(max(measured, default=0) * 1000, 1),
        "batch_utilization": round(batch_utilization(samples, admitted, per_call, WINDOW_SECS), 4),
        "upstream_429": stats().get("throttled", 0),
        "errors": [f"{type(error).__name__}: {error}"[:200] for error in run.errors[:5]],
        "load_average": os.getloadavg(),
    }


def main() -> None:
    from settings.tiktoken_offline import seed_tiktoken_cache
    from tests.support.emulator import EmulatorStarter

    work_dir = Path(tempfile.mkdtemp(prefix="bench-lanes-"))
    seed_tiktoken_cache(work_dir / "tiktoken")
    with RedisServer(work_dir / "redis") as server:
        env = {
            "CONDUIT_ENV_FILE": os.devnull,
            "REDIS_URL": server.url,
            "QUOTA_WINDOW_SECONDS": str(WINDOW_SECS),
            "APP_OPENAI_ENGINE": DEPLOYMENT,
            "APP_TPM_QUOTA": str(TPM),
            "APP_RPM_QUOTA": "100000",
            "QUOTA_INTERACTIVE_RESERVE": str(RESERVE),
            "LOG_LEVEL": "WARNING",
        }
        starter = EmulatorStarter(work_dir, {**env, "PYTHONUNBUFFERED": "1"})
        try:
            emulator = starter(
                limits={DEPLOYMENT: {"tpm": TPM, "rpm": 100_000}},
                EMULATOR_WINDOW_SECONDS=str(WINDOW_SECS),
                EMULATOR_FIRST_TOKEN_MS=str(FIRST_TOKEN_MS),
                EMULATOR_TOKEN_MS=str(TOKEN_MS),
            )
            os.environ.update({**env, **emulator.client_env()})
            figures = run_once(emulator, server.url)
        finally:
            starter.close()
    write_result(
        "quota_lanes",
        figures,
        f"interactive wait p50 {figures['interactive_wait_p50_ms']} ms, p95 "
        f"{figures['interactive_wait_p95_ms']} ms; batch utilization "
        f"{figures['batch_utilization']}; {figures['upstream_429']} upstream 429s "
        f"(load {os.getloadavg()[0]:.1f})",
    )


if __name__ == "__main__":
    main()
