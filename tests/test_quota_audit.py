"""No over-admission, ever: 32 threads and 4 processes race for one small limit on the real Redis.

Every grant is logged with the server time the script decided at; an audit that knows nothing of
buckets then slides a window of the configured length over the log. No window may hold more
tokens than the TPM, more requests than the RPM, or more than RPM/6 requests in a sixth of it.
Grants given back by ``release`` while still counted are left out, as the limiter refunds them.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import threading
import time

import pytest
import redis

from quota import QuotaLimiter
from settings import load_settings
from tests.support.processes import REPO_ROOT

pytestmark = pytest.mark.slow

DEPLOYMENT = "audited"
WINDOW_S = 1.5
WINDOWS = 3
TPM, RPM = 2000, 36  # RPM/6 = 6 requests per 0.25 s
THREADS, PROCESSES = 32, 4
# Processes import for a moment before they start; everyone starts together after this.
START_DELAY_S = 2.0
PROCESS_TIMEOUT_S = 60.0

Grant = tuple[int, int]  # (server time in µs, tokens still charged)


def hammer(limiter: QuotaLimiter, seed: int, start: float, until: float) -> list[Grant]:
    """Acquire random sizes until ``until``; report most grants, release some."""
    rng = random.Random(seed)
    grants: list[Grant] = []
    time.sleep(max(0.0, start - time.time()))
    while time.time() < until:
        tokens = rng.randint(1, 300)
        decision, at_us = limiter.acquire_timed("completion", DEPLOYMENT, tokens, f"app{seed % 3}")
        if not decision.allowed:
            # Short, random naps keep every client in the race without burning both cores.
            time.sleep(rng.uniform(0, min(decision.retry_after_s, 0.02)))
            continue
        released = rng.random() < 0.15
        # Never more than locked, so nothing is charged after the grant's own time.
        settlement = (limiter.release(decision.request_id) if released
                      else limiter.report(decision.request_id, rng.randint(0, tokens), 0))
        if not (released and settlement.refunded_tokens):  # that one gave its request back too
            grants.append((at_us, tokens - settlement.refunded_tokens))
    return grants


def make_limiter(url: str, charge_model: str) -> QuotaLimiter:
    settings = load_settings(quota_charge_model=charge_model)
    return QuotaLimiter(redis.Redis.from_url(url), settings, window_s=WINDOW_S)


def run_process() -> None:
    """Entry point of the audit's subprocesses: argv url charge_model seed start until."""
    url, charge_model, seed, start, until = sys.argv[1:]
    limiter = make_limiter(url, charge_model)
    print(json.dumps(hammer(limiter, int(seed), float(start), float(until))))


def most_in_any_window(events: list[tuple[int, int]], span_us: int) -> int:
    """The largest total weight of events whose times fit in one closed span of ``span_us``."""
    events = sorted(events)
    best = total = first = 0
    for at_us, weight in events:
        total += weight
        while events[first][0] < at_us - span_us:
            total -= events[first][1]
            first += 1
        best = max(best, total)
    return best


@pytest.mark.parametrize("charge_model", ["azure", "usage"])
def test_no_window_ever_holds_more_than_the_limit(redis_url, charge_model):
    make_limiter(redis_url, charge_model).set_limits("completion", DEPLOYMENT, tpm=TPM, rpm=RPM)
    start = time.time() + START_DELAY_S
    until = start + WINDOWS * WINDOW_S
    code = "from tests.test_quota_audit import run_process; run_process()"
    processes = [
        subprocess.Popen([sys.executable, "-c", code, redis_url, charge_model, str(1000 + n),
                          str(start), str(until)], cwd=REPO_ROOT, stdout=subprocess.PIPE)
        for n in range(PROCESSES)
    ]
    limiter = make_limiter(redis_url, charge_model)
    results: list[list[Grant]] = [[] for _ in range(THREADS)]

    def client(n: int) -> None:
        results[n] = hammer(limiter, n, start, until)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for process in processes:
        output, _ = process.communicate(timeout=PROCESS_TIMEOUT_S)
        assert process.returncode == 0
        results.append(json.loads(output))

    charged = [(at_us, tokens) for result in results for at_us, tokens in result]
    window_us = round(WINDOW_S * 1_000_000)
    sub_window_us = math.ceil(window_us / 6)
    assert len(results) == THREADS + PROCESSES and all(results[THREADS:]), "a process got nothing"
    assert most_in_any_window(charged, window_us) <= TPM
    assert most_in_any_window([(at_us, 1) for at_us, _ in charged], window_us) <= RPM
    assert most_in_any_window([(at_us, 1) for at_us, _ in charged], sub_window_us) <= RPM // 6
    # The race was real: the limit was reached, not merely approached.
    assert most_in_any_window([(at_us, 1) for at_us, _ in charged], sub_window_us) == RPM // 6


def test_the_audit_catches_an_over_admission():
    second = 1_000_000
    assert most_in_any_window([(0, 5), (second, 5)], second) == 10  # closed: both ends count
    assert most_in_any_window([(0, 5), (second + 1, 5)], second) == 5
    assert most_in_any_window([(0, 5), (second, 5), (second + 1, 7)], second) == 12
