"""How much of a deployment's quota each way of limiting uses, and how often upstream says 429.

    python -m bench.quota_utilization        -> bench/results/quota_utilization.json

One emulator deployment with a token limit ``T`` per (shortened) window, an embedded Redis, and
one real ``celery worker``. The same workload (completion tasks with mixed prompt sizes and
``max_tokens``, queued at once, a backlog of several windows) runs three ways:

- ``conduit``: the ``ai.chat_completion`` task, inside quota/ with ``charge=azure``;
- ``naive``: no limiter; the SDK retries a 429 itself, honouring ``retry-after``;
- ``fixed_window``: the older service's counter: tokens counted in fixed windows, trued up to
  actual usage after each call, a refusal retried when the window turns.

Per way: ``utilization`` (tokens the upstream accepted in the trailing window ÷ T, averaged over
the windows after the first while the backlog lasts), ``upstream_429`` (answers the emulator
refused), ``failed_tasks`` (tasks that gave up), ``p50_task_s`` / ``p95_task_s`` (queued to
done). Conduit and the emulator count in the same window. quota/ counts a charge from when it is
locked, the emulator from when the request arrives, so quota/ keeps each charge counted for its
upstream margin (QUOTA_UPSTREAM_MARGIN_SECONDS, the default 1 s) past the window, plus the part
of a bucket (a sixtieth of the window) already gone: conduit can spend T per 21-21.33 s, about
0.95 of T per 20 s (about 0.98 with the production 60 s window, where 1 s weighs less).
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from celery import shared_task

from bench.report import percentile, write_result
from settings import load_settings
from settings.redis_server import RedisServer

DEPLOYMENT = "bench-gpt"
TPM = 6000  # per emulator window
WINDOW_SECS = 20  # the emulator's and quota/'s
TASKS = 120
# The backlog outlasts the first window and this many more; utilization is measured over them.
MEASURED_WINDOWS = 4
SAMPLE_EVERY_SECS = 0.5
WORKER_CONCURRENCY = 16
# A modest model speed, so requests overlap as they do against Azure.
FIRST_TOKEN_MS = 50
TOKEN_MS = 0.5
NAIVE_SDK_RETRIES = 10
RESULT_TIMEOUT_SECS = 900
FIXED_WINDOW_KEY = "bench:fixed-window"


def workload(seed: int = 7) -> list[dict[str, Any]]:
    """The same mixed requests for every way: short and long prompts, small and large answers."""
    rng = random.Random(seed)
    words = "quota window token request deployment limit answer prompt worker".split()

    def prompt() -> str:
        return " ".join(rng.choices(words, k=rng.randint(10, 300)))

    return [
        {
            "messages": [
                {"role": "system", "content": "You summarise."},
                {"role": "user", "content": prompt()},
            ],
            "max_tokens": rng.choice([50, 100, 200, 300]),
        }
        for _ in range(TASKS)
    ]


# --- the two ways that are not Conduit's, as tasks the bench's worker also imports ---------------


@shared_task(name="bench.naive_completion", acks_late=True)
def naive_completion(messages: list[dict[str, Any]], max_tokens: int) -> int:
    """No limiter: send, and let the SDK retry a 429 after the upstream's retry-after."""
    from tasks.clients import completion_client

    client = completion_client().with_options(max_retries=NAIVE_SDK_RETRIES)
    answer = client.chat.completions.create(
        model=DEPLOYMENT, messages=messages, max_tokens=max_tokens
    )
    return answer.usage.total_tokens


@shared_task(name="bench.fixed_window_completion", bind=True, acks_late=True, max_retries=None)
def fixed_window_completion(self, messages: list[dict[str, Any]], max_tokens: int) -> int:
    """The older counter: a fixed window of T tokens; lock the estimate, true up to usage."""
    import openai

    from tasks.clients import completion_client
    from tasks.connections import redis_client
    from tasks.token_estimates import estimate_tokens

    window_s = load_settings().quota_window_s
    now = time.time()
    key = f"{FIXED_WINDOW_KEY}:{int(now // window_s)}"
    estimate = estimate_tokens(messages, DEPLOYMENT, max_tokens)
    counter = redis_client()
    if counter.incrby(key, estimate) > TPM:
        counter.decrby(key, estimate)
        raise self.retry(countdown=window_s - now % window_s + random.uniform(0, 1))
    counter.expire(key, 2 * window_s)
    try:
        answer = completion_client().chat.completions.create(
            model=DEPLOYMENT, messages=messages, max_tokens=max_tokens
        )
    except openai.RateLimitError as refused:
        counter.decrby(key, estimate)
        raise self.retry(
            countdown=float(refused.response.headers.get("retry-after", 1))
        ) from refused
    counter.decrby(key, estimate - answer.usage.total_tokens)  # trued up to usage
    return answer.usage.total_tokens


WAYS = {
    "conduit": "ai.chat_completion",
    "naive": "bench.naive_completion",
    "fixed_window": "bench.fixed_window_completion",
}


# --- running one way -----------------------------------------------------------------------------


def accepted_tokens(emulator) -> tuple[int, int]:
    stats = emulator.stats()["deployments"].get(DEPLOYMENT, {})
    return stats.get("tokens_charged", 0), stats.get("throttled", 0)


def window_utilization(samples: list[tuple[float, int]], window_s: float) -> float:
    """The mean over time of (tokens accepted in the trailing window) ÷ T, from samples of the
    cumulative count taken since the first request; only samples a full window in count."""
    times = [t for t, _ in samples]
    ratios = []
    for t, total in samples:
        if t - times[0] < window_s:
            continue
        # The last sample at or before t - window: the count a window ago.
        earlier = max(i for i, sample_t in enumerate(times) if sample_t <= t - window_s)
        ratios.append((total - samples[earlier][1]) / TPM)
    return sum(ratios) / len(ratios)


def run_way(way: str, app, emulator, redis_url: str) -> dict[str, float | int]:
    redis.Redis.from_url(redis_url).flushall()
    emulator.reset()
    window = emulator.stats()["window_s"]
    submitted = time.time()
    results = [
        app.send_task(
            WAYS[way], args=[request["messages"]], kwargs={"max_tokens": request["max_tokens"]}
        )
        for request in workload()
    ]
    samples = []
    while time.time() - submitted < (1 + MEASURED_WINDOWS) * window:
        samples.append((time.time(), accepted_tokens(emulator)[0]))
        time.sleep(SAMPLE_EVERY_SECS)
    backlog_left = sum(not result.ready() for result in results)
    for result in results:
        # Not raised: a naive task can run out of SDK retries on 429s, and that is a figure too.
        result.get(timeout=RESULT_TIMEOUT_SECS, propagate=False)
    durations = [result.date_done.timestamp() - submitted for result in results]
    return {
        "utilization": round(window_utilization(samples, window), 4),
        "upstream_429": accepted_tokens(emulator)[1],
        "p50_task_s": round(percentile(durations, 0.5), 2),
        "p95_task_s": round(percentile(durations, 0.95), 2),
        "backlog_after_measurement": backlog_left,
        "failed_tasks": sum(result.failed() for result in results),
    }


def main() -> None:
    from tests.support.emulator import EmulatorStarter
    from tests.support.processes import ManagedProcess, python_args
    from worker import create_celery

    work_dir = Path(tempfile.mkdtemp(prefix="bench-quota-"))
    with RedisServer(work_dir / "redis") as server:
        env = {
            **os.environ,
            "CONDUIT_ENV_FILE": os.devnull,
            "REDIS_URL": server.url,
            "QUOTA_WINDOW_SECONDS": str(WINDOW_SECS),
            "QUOTA_CHARGE_MODEL": "azure",
            "APP_OPENAI_ENGINE": DEPLOYMENT,
            "APP_TPM_QUOTA": str(TPM),
            "APP_RPM_QUOTA": "100000",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
        starter = EmulatorStarter(work_dir, env)
        try:
            emulator = starter(
                limits={DEPLOYMENT: {"tpm": TPM, "rpm": 100_000}},
                EMULATOR_WINDOW_SECONDS=str(WINDOW_SECS),
                EMULATOR_FIRST_TOKEN_MS=str(FIRST_TOKEN_MS),
                EMULATOR_TOKEN_MS=str(TOKEN_MS),
            )
            env.update(emulator.client_env())
            os.environ.update(
                {
                    name: env[name]
                    for name in (
                        "CONDUIT_ENV_FILE",
                        "REDIS_URL",
                        "QUOTA_WINDOW_SECONDS",
                        "APP_OPENAI_ENGINE",
                        "APP_TPM_QUOTA",
                    )
                }
            )
            app = create_celery(load_settings())
            worker_name = f"bench-{uuid.uuid4().hex[:6]}@%h"
            hostname = worker_name.replace("%h", __import__("socket").gethostname())
            worker_args = python_args(
                "-m",
                "celery",
                "-A",
                "worker",
                "worker",
                "-P",
                "threads",
                "-c",
                str(WORKER_CONCURRENCY),
                "-n",
                worker_name,
                "-I",
                "bench.quota_utilization",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "WARNING",
            )
            with ManagedProcess(
                worker_args,
                env,
                work_dir / "worker.log",
                name="worker",
                ready=lambda: bool(app.control.ping([hostname], timeout=0.5)),
            ):
                figures = {way: run_way(way, app, emulator, server.url) for way in WAYS}
            app.close()
        finally:
            starter.close()
    conduit = figures["conduit"]
    write_result(
        "quota_utilization",
        {
            "deployment_tpm": TPM,
            "window_s": WINDOW_SECS,
            "quota_upstream_margin_s": load_settings().quota_upstream_margin_s,
            "tasks": TASKS,
            "measured_windows": MEASURED_WINDOWS,
            "worker_concurrency": WORKER_CONCURRENCY,
            "ways": figures,
        },
        f"conduit utilization {conduit['utilization']:.3f} with {conduit['upstream_429']} "
        f"upstream 429s; naive {figures['naive']['upstream_429']} 429s, fixed_window "
        f"{figures['fixed_window']['upstream_429']} 429s",
    )


if __name__ == "__main__":
    sys.exit(main())
