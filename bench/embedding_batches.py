"""How much of an embedding deployment batch tasks spend on texts already embedded (issue 10.17).

    python -m bench.embedding_batches        -> bench/results/embedding_batches.json

One emulator embedding deployment with ``TPM`` tokens per (shortened) window, the same window
for quota/, an embedded Redis and one real ``celery worker``. ``TASKS`` batch tasks, each of
``TEXTS_PER_TASK`` texts sent ``BATCH_SIZE`` at a time, are queued at once, so most of them are
refused by the quota part-way through their batches. Two ways:

- ``checkpointed``: ``ai.create_embedding_batch`` as shipped: each answered request is kept
  by task id and a retry sends only the rest;
- ``whole_task_retry``: the same function in a task without the checkpoint (what shipped
  before): a refusal part-way retries the task from its first batch.

Per way: ``requests_admitted`` and ``repeated_requests`` (bodies the emulator had already
admitted: work paid for twice; target 0), ``tokens_charged`` against ``useful_tokens`` (Azure's
arrival charge of every text once: characters / 4 + 1), ``useful_share`` (their ratio; 1.0 is
no waste), ``upstream_429``, ``failed_tasks`` and ``elapsed_s``, for each of ``REPEATS`` runs
(the two ways alternating, so load from elsewhere falls on both), and their medians.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from bench.report import median, write_result
from settings import load_settings
from settings.redis_server import RedisServer
from tasks import embedding
from tasks.ai_tasks import ai_task

DEPLOYMENT = "bench-embed"
TPM = 4000  # per window, the emulator's and quota/'s
WINDOW_SECS = 10
TASKS = 16
TEXTS_PER_TASK = 12
BATCH_SIZE = 3  # four requests a task
WORKER_CONCURRENCY = 8
RESULT_TIMEOUT_SECS = 900
# Runs of each way; the JSON has every run and the median of each figure.
REPEATS = 3
# Azure's arrival charge of an embedding input (emulators/embeddings.py charges the same).
CHARS_PER_TOKEN = 4

# The task as it was before 10.17: the same function, no checkpoint. The bench's worker imports
# this module (-I), so the task exists there too.
whole_task_retry = ai_task("bench.embedding_batch_whole_task_retry")(
    embedding.create_embedding_batch
)

WAYS = {
    "checkpointed": "ai.create_embedding_batch",
    "whole_task_retry": "bench.embedding_batch_whole_task_retry",
}


def workload() -> list[list[str]]:
    """Distinct texts for every task, about 60 tokens each."""
    words = "quota window token request deployment limit answer prompt worker batch".split()
    return [
        [
            f"task {task} text {number}: "
            + " ".join(words[(task + number + k) % 10] for k in range(50))
            for number in range(TEXTS_PER_TASK)
        ]
        for task in range(TASKS)
    ]


def useful_tokens(texts: list[list[str]]) -> int:
    return sum(len(text) // CHARS_PER_TOKEN + 1 for task in texts for text in task)


def run_way(way: str, app: Any, emulator: Any, redis_url: str) -> dict[str, float | int]:
    redis.Redis.from_url(redis_url).flushall()
    emulator.reset()
    texts = workload()
    started = time.monotonic()
    results = [
        app.send_task(WAYS[way], args=[task_texts], kwargs={"batch_size": BATCH_SIZE})
        for task_texts in texts
    ]
    for result in results:
        result.get(timeout=RESULT_TIMEOUT_SECS, propagate=False)
    elapsed = time.monotonic() - started
    stats = emulator.stats()["deployments"].get(DEPLOYMENT, {})
    useful = useful_tokens(texts)
    charged = stats.get("tokens_charged", 0)
    return {
        "requests_admitted": stats.get("admitted", 0),
        "requests_needed": TASKS * -(-TEXTS_PER_TASK // BATCH_SIZE),
        "repeated_requests": stats.get("repeated_requests", 0),
        "tokens_charged": charged,
        "useful_tokens": useful,
        "useful_share": round(useful / charged, 4) if charged else 0.0,
        "upstream_429": stats.get("throttled", 0),
        "failed_tasks": sum(result.failed() for result in results),
        "elapsed_s": round(elapsed, 1),
    }


def main() -> None:
    # Imported once the environment is set: importing worker builds its app from settings.
    from tests.support.emulator import EmulatorStarter
    from tests.support.processes import ManagedProcess, celery_worker_args
    from worker import create_celery

    load_before = os.getloadavg()
    work_dir = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    with RedisServer(work_dir / "redis") as server:
        env = {
            **os.environ,
            "CONDUIT_ENV_FILE": os.devnull,
            "REDIS_URL": server.url,
            "QUOTA_WINDOW_SECONDS": str(WINDOW_SECS),
            "QUOTA_CHARGE_MODEL": "azure",
            "APP_EMBEDDING_ENGINE": DEPLOYMENT,
            "APP_EMBEDDING_TPM_QUOTA": str(TPM),
            "APP_EMBEDDING_RPM_QUOTA": "100000",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
        starter = EmulatorStarter(work_dir, env)
        try:
            emulator = starter(
                limits={DEPLOYMENT: {"tpm": TPM, "rpm": 100_000}},
                EMULATOR_WINDOW_SECONDS=str(WINDOW_SECS),
            )
            env.update(emulator.client_env())
            for name in ("CONDUIT_ENV_FILE", "REDIS_URL", "QUOTA_WINDOW_SECONDS"):
                os.environ[name] = env[name]
            app = create_celery(load_settings())
            worker_name = f"bench-{uuid.uuid4().hex[:6]}@%h"
            hostname = worker_name.replace("%h", socket.gethostname())
            worker_args = celery_worker_args(
                worker_name,
                WORKER_CONCURRENCY,
                *("-I", "bench.embedding_batches"),
                loglevel="WARNING",
            )
            with ManagedProcess(
                worker_args,
                env,
                work_dir / "worker.log",
                name="worker",
                ready=lambda: bool(app.control.ping([hostname], timeout=0.5)),
            ):
                runs = [
                    {way: run_way(way, app, emulator, server.url) for way in WAYS}
                    for _ in range(REPEATS)
                ]
            app.close()
        finally:
            starter.close()
    figures: dict[str, dict[str, Any]] = {
        way: {
            "median": {name: median([run[way][name] for run in runs]) for name in runs[0][way]},
            "runs": [run[way] for run in runs],
        }
        for way in WAYS
    }
    ours: dict[str, float] = figures["checkpointed"]["median"]
    before: dict[str, float] = figures["whole_task_retry"]["median"]
    write_result(
        "embedding_batches",
        {
            "deployment_tpm": TPM,
            "window_s": WINDOW_SECS,
            "tasks": TASKS,
            "texts_per_task": TEXTS_PER_TASK,
            "batch_size": BATCH_SIZE,
            "worker_concurrency": WORKER_CONCURRENCY,
            "repeats": REPEATS,
            "cpu_count": os.cpu_count(),
            "loadavg_before": [round(value, 2) for value in load_before],
            "loadavg_after": [round(value, 2) for value in os.getloadavg()],
            "ways": figures,
        },
        f"medians of {REPEATS}: checkpointed {ours['repeated_requests']} repeated requests, "
        f"useful share {ours['useful_share']:.3f}; whole-task retry "
        f"{before['repeated_requests']} repeated, useful share {before['useful_share']:.3f}",
    )


if __name__ == "__main__":
    main()
