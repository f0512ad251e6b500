"""How fast is a quota decision, next to the floor (one INCR) and the ``limits`` library?

    python -m bench.quota_limiter        # about 90 s -> bench/results/quota_limiter.json

Against a fresh local redis-server, at 1, 8 and 32 client threads sharing one client, each for
DURATION_S, REPEATS times with the systems interleaved (so a busy neighbour slows all of them
alike); figures are medians over the repeats:

- ``incr_per_s``: a plain INCR round trip, the floor for anything that talks to Redis.
- ``acquire_per_s``: QuotaLimiter.acquire alone (one EVALSHA: TPM, RPM and RPM/6 together);
  ``ratio_vs_incr`` is acquire/INCR, measured side by side in each repeat. At 1 thread it mostly
  measures the round trip: the script spends a fixed ~40 µs in Redis (five Redis calls, the
  totals' text, the append-only file) where INCR spends ~1 µs, so the faster the round trip, the
  lower the ratio.
- ``pairs_per_s``, ``p50_ms``, ``p99_ms``: acquire then report, what a task does per call.
- ``limits_moving_per_s``, ``limits_sliding_per_s``: the same decision with the ``limits``
  library, which needs two hits (a per-token item with cost=tokens, a per-request item).

Every request asks for 1-100 tokens: the moving window stores one list entry per token, so larger
requests would only make it slower and fill memory; our limiter's cost does not depend on size.
Limits are set high enough that these phases admit everything. A separate audit phase then races
32 threads for a small limit over a short window, logs each grant's server time, and counts
``overadmitted``: tokens or requests beyond a limit in any window of the configured length plus
the upstream margin (QUOTA_UPSTREAM_MARGIN_SECONDS), which bounds every window upstream counts in.
"""

from __future__ import annotations

import math
import random
import tempfile
import threading
import time
from collections.abc import Callable

import redis
from limits import RateLimitItemPerMinute
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from bench.report import median, percentile, write_result
from quota import QuotaLimiter
from settings import load_settings
from settings.redis_server import RedisServer
from tests.support.quota import granted

THREAD_COUNTS = (1, 8, 32)
REPEATS = 3
DURATION_S = 1.5
MAX_TOKENS = 100
# High enough that no throughput phase is refused: refusals are a different (O(buckets)) path.
BIG_LIMIT = 10_000_000
DEPLOYMENT = "bench"
AUDIT_WINDOW_S, AUDIT_WINDOWS, AUDIT_TPM, AUDIT_RPM = 2.0, 3, 5000, 120

Operation = Callable[[random.Random], object]


def most_in_any_window(events: list[tuple[int, int]], span_us: int) -> int:
    """The largest total weight of (time µs, weight) events inside one closed span of ``span_us``.

    Knows nothing of buckets: the independent check that no window held more than the limit."""
    events = sorted(events)
    best = total = first = 0
    for at_us, weight in events:
        total += weight
        while events[first][0] < at_us - span_us:
            total -= events[first][1]
            first += 1
        best = max(best, total)
    return best


def run_threads(operation: Operation, threads: int, duration_s: float) -> tuple[float, list[float]]:
    """Run ``operation`` in ``threads`` threads for ``duration_s``: ops/s and latencies (ms)."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    start_line = threading.Barrier(threads + 1)

    def client(index: int) -> None:
        rng = random.Random(index)
        start_line.wait()
        deadline = time.perf_counter() + duration_s
        mine = latencies[index]
        while (began := time.perf_counter()) < deadline:
            operation(rng)
            mine.append((time.perf_counter() - began) * 1000)

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    start_line.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    merged = [latency for mine in latencies for latency in mine]
    return len(merged) / elapsed, merged


def systems(url: str, client: redis.Redis) -> dict[str, Operation]:
    """Each system's one decision on the shared request mix."""
    limiter = QuotaLimiter(client, load_settings())
    limiter.set_limits("completion", DEPLOYMENT, tpm=BIG_LIMIT, rpm=BIG_LIMIT)
    storage = RedisStorage(url)
    moving, sliding = MovingWindowRateLimiter(storage), SlidingWindowCounterRateLimiter(storage)
    tokens_item, requests_item = (
        RateLimitItemPerMinute(BIG_LIMIT),
        RateLimitItemPerMinute(BIG_LIMIT),
    )

    def acquire(rng: random.Random) -> object:
        return limiter.acquire("completion", DEPLOYMENT, rng.randint(1, MAX_TOKENS), "bench")

    def pair(rng: random.Random) -> object:
        tokens = rng.randint(1, MAX_TOKENS)
        decision = limiter.acquire("completion", DEPLOYMENT, tokens, "bench")
        return limiter.report(granted(decision), tokens, 0)

    def with_limits(strategy: MovingWindowRateLimiter | SlidingWindowCounterRateLimiter):
        def decide(rng: random.Random) -> object:
            cost = rng.randint(1, MAX_TOKENS)
            return strategy.hit(tokens_item, "tokens", DEPLOYMENT, cost=cost) and strategy.hit(
                requests_item, "requests", DEPLOYMENT
            )

        return decide

    return {
        "incr": lambda rng: client.incr("bench:incr"),
        "acquire": acquire,
        "pairs": pair,
        "limits_moving": with_limits(moving),
        "limits_sliding": with_limits(sliding),
    }


def audit(client: redis.Redis) -> int:
    """Race 32 threads for a small limit; how far any window went over it (0 when none did)."""
    settings = load_settings()
    limiter = QuotaLimiter(client, settings, window_s=AUDIT_WINDOW_S)
    limiter.set_limits("completion", "audited", tpm=AUDIT_TPM, rpm=AUDIT_RPM)
    grants: list[tuple[int, int]] = []

    def grab(rng: random.Random) -> None:
        tokens = rng.randint(1, MAX_TOKENS)
        decision, at_us = limiter.acquire_timed("completion", "audited", tokens, "audit")
        if decision.allowed:
            grants.append((at_us, tokens))  # list.append is atomic under the GIL
            limiter.report(granted(decision), tokens, 0)

    run_threads(grab, 32, AUDIT_WINDOWS * AUDIT_WINDOW_S)
    window_us = round(AUDIT_WINDOW_S * 1_000_000)
    margin_us = round(settings.quota_upstream_margin_s * 1_000_000)
    sub_window_us = math.ceil(window_us / 6)
    requests = [(at_us, 1) for at_us, _ in grants]
    return (
        max(0, most_in_any_window(grants, window_us + margin_us) - AUDIT_TPM)
        + max(0, most_in_any_window(requests, window_us + margin_us) - AUDIT_RPM)
        + max(0, most_in_any_window(requests, sub_window_us + margin_us) - AUDIT_RPM // 6)
    )


def main() -> None:
    throughput: dict[tuple[str, int], list[float]] = {}
    ratios: dict[int, list[float]] = {threads: [] for threads in THREAD_COUNTS}
    p50: dict[int, list[float]] = {threads: [] for threads in THREAD_COUNTS}
    p99: dict[int, list[float]] = {threads: [] for threads in THREAD_COUNTS}
    with tempfile.TemporaryDirectory() as data_dir, RedisServer(data_dir) as server:
        client = redis.Redis.from_url(server.url)
        for _ in range(REPEATS):
            for threads in THREAD_COUNTS:
                client.flushall()  # each phase starts from empty windows, far from the limits
                measured = {}
                for name, operation in systems(server.url, client).items():
                    per_s, latencies = run_threads(operation, threads, DURATION_S)
                    throughput.setdefault((name, threads), []).append(per_s)
                    measured[name] = per_s
                    if name == "pairs":
                        p50[threads].append(percentile(latencies, 0.50))
                        p99[threads].append(percentile(latencies, 0.99))
                ratios[threads].append(measured["acquire"] / measured["incr"])
        client.flushall()
        overadmitted = audit(client)
        client.close()

    def by_threads(name: str) -> dict[str, float]:
        return {str(threads): round(median(throughput[name, threads])) for threads in THREAD_COUNTS}

    # Named first: the summary line reads them back with their types.
    acquire_per_s = by_threads("acquire")
    limits_moving_per_s = by_threads("limits_moving")
    limits_sliding_per_s = by_threads("limits_sliding")
    ratio_vs_incr = {str(t): round(median(ratios[t]), 3) for t in THREAD_COUNTS}
    p50_ms = {str(t): round(median(p50[t]), 3) for t in THREAD_COUNTS}
    p99_ms = {str(t): round(median(p99[t]), 3) for t in THREAD_COUNTS}
    figures: dict[str, object] = {
        "threads": list(THREAD_COUNTS),
        "acquire_per_s": acquire_per_s,
        "pairs_per_s": by_threads("pairs"),
        "incr_per_s": by_threads("incr"),
        "limits_moving_per_s": limits_moving_per_s,
        "limits_sliding_per_s": limits_sliding_per_s,
        "ratio_vs_incr": ratio_vs_incr,
        "p50_ms": p50_ms,
        "p99_ms": p99_ms,
        "overadmitted": overadmitted,
        "repeats": REPEATS,
        "duration_s": DURATION_S,
        "max_tokens_per_request": MAX_TOKENS,
    }
    worst_ratio = min(ratio_vs_incr.values())
    summary = (
        f"acquire {'/'.join(map(str, acquire_per_s.values()))} per s at "
        f"{'/'.join(map(str, THREAD_COUNTS))} threads, ratio vs INCR >= {worst_ratio}, "
        f"pairs p50/p99 {p50_ms['1']}/{p99_ms['1']} ms (1 thread), "
        f"limits moving/sliding {limits_moving_per_s['8']}/"
        f"{limits_sliding_per_s['8']} per s (8 threads), "
        f"overadmitted {overadmitted}"
    )
    write_result("quota_limiter", figures, summary)


if __name__ == "__main__":
    main()
