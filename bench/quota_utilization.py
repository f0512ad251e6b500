"""How much of a deployment's quota each way of limiting uses, and how often upstream says 429.

    python -m bench.quota_utilization        -> bench/results/quota_utilization.json

One emulator deployment with a token limit ``T`` per (shortened) window, an embedded Redis, and
one real ``celery worker``. The same workload (completion tasks with mixed prompt sizes and
``max_tokens``, queued at once, a backlog of several windows) runs these ways:

- ``conduit``: the ``ai.chat_completion`` task, inside quota/ with ``charge=azure``, naming the
  one deployment;
- ``naive``: no limiter; the SDK retries a 429 itself, honouring ``retry-after``;
- ``fixed_window``: the older service's counter: tokens counted in fixed windows, trued up to
  actual usage after each call, a refusal retried when the window turns;
- ``spillover``: the task names the logical model, served by two deployments (``T`` and
  ``T2``, APP_OPENAI_DEPLOYMENTS); a larger backlog in proportion; utilization is of T + T2;
- ``shared``: ``conduit`` while an outside client (this process, straight to the emulator)
  spends about SHARED_FRACTION of T. Conduit learns of it from the answers' x-ratelimit headers,
  and a 429 keeps its charge and cools the deployment down for every worker. Figures:
  ``conduit_share_of_rest`` (Conduit's accepted tokens in the trailing window ÷ what the outside
  client left of T, averaged), ``upstream_429`` (Conduit's only), ``outside_429``, and
  ``repeated_requests`` when the emulator's stats count them.

Per way: ``utilization`` (tokens the upstream accepted in the trailing window ÷ T, averaged over
the windows after the first while the backlog lasts), ``upstream_429`` (answers the emulator
refused), ``failed_tasks`` (tasks that gave up), ``p50_task_s`` / ``p95_task_s`` (queued to
done). Conduit and the emulator count in the same window. quota/ counts a charge from when it is
stamped, the emulator from when the request arrives, so quota/ keeps each charge counted for its
upstream margin (QUOTA_UPSTREAM_MARGIN_SECONDS, the default 0.5 s, two buckets of a sixtieth of
the window here: 0.67 s) past the window, plus the part of its bucket still to come: conduit can
spend T per 20.67-21 s, about 0.96 of T per 20 s (0.975 with the production 60 s window).

Conduit's ways also report ``stamp_to_charge_ms``: the worker's requests carry when quota/
stamped their charge (``x-conduit-stamp-us``, set by a send observer only in the bench's worker)
and the emulator says how much later it charged them (p50, p90, p99, max): what the margin must
cover. ``BENCH_STAMP_PROBE=sent`` stamps them when they leave instead: the wire's part alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import redis
from celery import shared_task
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from bench.report import percentile, write_result
from emulators.control import STAMP_HEADER
from settings import load_settings
from settings.redis_server import RedisServer

DEPLOYMENT = "bench-gpt"
TPM = 6000  # per emulator window
# Spill-over: the logical model and its second deployment, with a smaller limit.
MODEL = "bench-model"
DEPLOYMENT_2 = "bench-gpt-2"
TPM_2 = 3000
SHARED_FRACTION = 0.3
OUTSIDE_APP_MESSAGES = [{"role": "user", "content": "An outside client's short question."}]
OUTSIDE_MAX_TOKENS = 40
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
# Set in the bench's worker: each request carries when quota/ stamped its charge, and the
# emulator reports how much later it charged it (``stamp_to_charge_ms``): what the upstream
# margin must cover.
PROBE_ENV = "BENCH_STAMP_PROBE"


def stamp_probe(call: Any, request: Any) -> None:
    """tasks.upstream's send observer: the request says when its charge was stamped."""
    request.headers[STAMP_HEADER] = str(
        time.time_ns() // 1000 if os.environ.get(PROBE_ENV) == "sent" else call.stamped_us
    )


if os.environ.get(PROBE_ENV):
    from tasks.upstream import SEND_OBSERVERS

    SEND_OBSERVERS.append(stamp_probe)


def workload(seed: int = 7, tasks: int = TASKS) -> list[dict[str, Any]]:
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
        for _ in range(tasks)
    ]


# --- the two ways that are not Conduit's, as tasks the bench's worker also imports ---------------


def sdk_messages(messages: list[dict[str, Any]]) -> list[ChatCompletionMessageParam]:
    """The JSON messages as the SDK types them: a cast, not a conversion (as tasks/completion)."""
    return cast("list[ChatCompletionMessageParam]", messages)


def total_tokens(answer: ChatCompletion) -> int:
    """The answer's token count (the SDK types usage optional; Azure and the emulator send it)."""
    assert answer.usage is not None, "the answer has no usage"
    return answer.usage.total_tokens


@shared_task(name="bench.naive_completion", acks_late=True)
def naive_completion(messages: list[dict[str, Any]], max_tokens: int) -> int:
    """No limiter: send, and let the SDK retry a 429 after the upstream's retry-after."""
    from tasks.clients import completion_client

    client = completion_client().with_options(max_retries=NAIVE_SDK_RETRIES)
    answer = client.chat.completions.create(
        model=DEPLOYMENT, messages=sdk_messages(messages), max_tokens=max_tokens
    )
    return total_tokens(answer)


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
    # redis-py types a reply "maybe awaitable"; on this sync client it is the count.
    if cast(int, counter.incrby(key, estimate)) > TPM:
        counter.decrby(key, estimate)
        raise self.retry(countdown=window_s - now % window_s + random.uniform(0, 1))
    counter.expire(key, 2 * window_s)
    try:
        answer = completion_client().chat.completions.create(
            model=DEPLOYMENT, messages=sdk_messages(messages), max_tokens=max_tokens
        )
    except openai.RateLimitError as refused:
        counter.decrby(key, estimate)
        raise self.retry(
            countdown=float(refused.response.headers.get("retry-after", 1))
        ) from refused
    used = total_tokens(answer)
    counter.decrby(key, estimate - used)  # trued up to usage
    return used


WAYS = {
    "conduit": "ai.chat_completion",
    "naive": "bench.naive_completion",
    "fixed_window": "bench.fixed_window_completion",
    "spillover": "ai.chat_completion",
    "shared": "ai.chat_completion",
}
# Which deployments a way's tokens are counted on, and the model its tasks name (None: none).
WAY_DEPLOYMENTS = {"spillover": (DEPLOYMENT, DEPLOYMENT_2)}
WAY_MODEL = {"conduit": DEPLOYMENT, "shared": DEPLOYMENT, "spillover": None}


# --- running one way -----------------------------------------------------------------------------


def accepted_tokens(emulator, deployments: tuple[str, ...] = (DEPLOYMENT,)) -> tuple[int, int]:
    stats = emulator.stats()["deployments"]
    entries = [stats.get(name, {}) for name in deployments]
    return (
        sum(entry.get("tokens_charged", 0) for entry in entries),
        sum(entry.get("throttled", 0) for entry in entries),
    )


def window_utilization(
    samples: list[tuple[float, int]],
    window_s: float,
    limit: int = TPM,
    outside: Callable[[float, float], int] | None = None,
) -> float:
    """The mean over time of (tokens accepted in the trailing window) ÷ ``limit``, from samples
    of the cumulative count taken since the first request; only samples a full window in count.
    With ``outside`` (tokens an outside client got accepted between two times), its part of each
    window is taken from both the count and the limit: the share of what it left."""
    times = [t for t, _ in samples]
    ratios = []
    for t, total in samples:
        if t - times[0] < window_s:
            continue
        # The last sample at or before t - window: the count a window ago.
        earlier = max(i for i, sample_t in enumerate(times) if sample_t <= t - window_s)
        theirs = outside(times[earlier], t) if outside else 0
        ratios.append((total - samples[earlier][1] - theirs) / (limit - theirs))
    return sum(ratios) / len(ratios)


class OutsideClient:
    """Another client of the deployment, outside Conduit: one fixed small request at a pace that
    spends SHARED_FRACTION of T per window, straight to the emulator; its 429s are its own."""

    def __init__(self, emulator, window_s: float) -> None:
        self.client = emulator.azure_client()
        emulator.reset()
        self.client.chat.completions.create(
            model=DEPLOYMENT, messages=OUTSIDE_APP_MESSAGES, max_tokens=OUTSIDE_MAX_TOKENS
        )
        self.per_call = emulator.stats()["deployments"][DEPLOYMENT]["tokens_charged"]
        emulator.reset()
        self.interval_s = self.per_call / (SHARED_FRACTION * TPM / window_s)
        self.accepted_at: list[float] = []
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        import openai

        next_at = time.time()
        while not self._stop.wait(max(0.0, next_at - time.time())):
            next_at += self.interval_s
            try:
                self.client.chat.completions.create(
                    model=DEPLOYMENT, messages=OUTSIDE_APP_MESSAGES, max_tokens=OUTSIDE_MAX_TOKENS
                )
                self.accepted_at.append(time.time())
            except openai.RateLimitError:
                self.refused += 1

    def tokens_between(self, start: float, end: float) -> int:
        return self.per_call * sum(start < at <= end for at in list(self.accepted_at))

    def __enter__(self) -> OutsideClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_way(way: str, app, emulator, redis_url: str) -> dict[str, float | int]:
    redis.Redis.from_url(redis_url).flushall()
    emulator.reset()
    window = emulator.stats()["window_s"]
    deployments = WAY_DEPLOYMENTS.get(way, (DEPLOYMENT,))
    limit = TPM + TPM_2 if way == "spillover" else TPM
    # The backlog grows with the limit, so it outlasts the measured windows in every way.
    requests = workload(tasks=TASKS * limit // TPM)
    outside = OutsideClient(emulator, window) if way == "shared" else None
    options = {"model": WAY_MODEL[way]} if way in WAY_MODEL else {}
    with outside or contextlib.nullcontext():
        submitted = time.time()
        results = [
            app.send_task(
                WAYS[way],
                args=[request["messages"]],
                kwargs={"max_tokens": request["max_tokens"], **options},
            )
            for request in requests
        ]
        samples = []
        while time.time() - submitted < (1 + MEASURED_WINDOWS) * window:
            samples.append((time.time(), accepted_tokens(emulator, deployments)[0]))
            time.sleep(SAMPLE_EVERY_SECS)
        backlog_left = sum(not result.ready() for result in results)
        for result in results:
            # Not raised: a naive task can run out of SDK retries on 429s, and that is a figure.
            result.get(timeout=RESULT_TIMEOUT_SECS, propagate=False)
    durations = [result.date_done.timestamp() - submitted for result in results]
    throttled = accepted_tokens(emulator, deployments)[1]
    figures: dict[str, float | int] = {
        "utilization": round(window_utilization(samples, window, limit), 4),
        "upstream_429": throttled - (outside.refused if outside else 0),
        "p50_task_s": round(percentile(durations, 0.5), 2),
        "p95_task_s": round(percentile(durations, 0.95), 2),
        "backlog_after_measurement": backlog_left,
        "failed_tasks": sum(result.failed() for result in results),
        "tasks": len(requests),
    }
    if way == "spillover":
        per_deployment = emulator.stats()["deployments"]
        figures["tokens_per_deployment"] = {  # type: ignore[assignment]
            name: per_deployment.get(name, {}).get("tokens_charged", 0) for name in deployments
        }
    if outside is not None:
        figures["conduit_share_of_rest"] = round(
            window_utilization(samples, window, limit, outside.tokens_between), 4
        )
        figures["outside_429"] = outside.refused
        figures["outside_tokens"] = outside.per_call * len(outside.accepted_at)
    stats = emulator.stats()
    if WAYS[way] == "ai.chat_completion":
        figures["stamp_to_charge_ms"] = stats["stamp_to_charge_ms"]
    repeated = stats.get("repeated_requests")
    if repeated is None:
        repeated = stats["deployments"].get(DEPLOYMENT, {}).get("repeated_requests")
    if repeated is not None:
        figures["repeated_requests"] = repeated
    return figures


def main() -> None:
    """Every way, recorded; ``python -m bench.quota_utilization conduit shared`` runs only those
    and prints their figures."""
    chosen = sys.argv[1:] or list(WAYS)
    unknown = set(chosen) - set(WAYS)
    if unknown:
        raise SystemExit(f"unknown ways {sorted(unknown)}: choose from {', '.join(WAYS)}")
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
            "APP_OPENAI_ENGINE": MODEL,
            "APP_OPENAI_DEPLOYMENTS": json.dumps(
                [
                    {"name": DEPLOYMENT, "tpm": TPM, "rpm": 100_000},
                    {"name": DEPLOYMENT_2, "tpm": TPM_2, "rpm": 100_000},
                ]
            ),
            "APP_TPM_QUOTA": str(TPM),
            "APP_RPM_QUOTA": "100000",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            PROBE_ENV: os.environ.get(PROBE_ENV, "1"),
        }
        starter = EmulatorStarter(work_dir, env)
        try:
            emulator = starter(
                limits={
                    DEPLOYMENT: {"tpm": TPM, "rpm": 100_000},
                    DEPLOYMENT_2: {"tpm": TPM_2, "rpm": 100_000},
                },
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
                        "APP_OPENAI_DEPLOYMENTS",
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
                figures = {way: run_way(way, app, emulator, server.url) for way in chosen}
            app.close()
        finally:
            starter.close()
    if set(chosen) != set(WAYS):  # a partial run (to look at one way): printed, not recorded
        print(json.dumps(figures, indent=2))
        return
    conduit = figures["conduit"]
    write_result(
        "quota_utilization",
        {
            "deployment_tpm": TPM,
            "spillover_tpm": [TPM, TPM_2],
            "shared_fraction": SHARED_FRACTION,
            "load_average": os.getloadavg(),
            "window_s": WINDOW_SECS,
            "quota_upstream_margin_s": load_settings().quota_upstream_margin_s,
            "tasks": TASKS,
            "measured_windows": MEASURED_WINDOWS,
            "worker_concurrency": WORKER_CONCURRENCY,
            "ways": figures,
        },
        f"conduit utilization {conduit['utilization']:.3f} with {conduit['upstream_429']} "
        f"upstream 429s; naive {figures['naive']['upstream_429']} 429s, fixed_window "
        f"{figures['fixed_window']['upstream_429']} 429s; spillover "
        f"{figures['spillover']['utilization']:.3f} of T+T2 with "
        f"{figures['spillover']['upstream_429']} 429s; shared: share of the rest "
        f"{figures['shared']['conduit_share_of_rest']:.3f}, {figures['shared']['upstream_429']} "
        f"429s, {figures['shared']['failed_tasks']} failed",
    )


if __name__ == "__main__":
    main()
