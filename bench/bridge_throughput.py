"""What the bridge's guarantees cost: ingress against raw publishing, and the round trip.

    python -m bench.bridge_throughput        -> bench/results/bridge_throughput.json

On an embedded Redis of its own, in one run:

- ``raw_publish_per_s``: a tight ``apply_async`` loop putting echo tasks into the echo queue,
  the fastest a client puts tasks into Celery one by one;
- ``bridge_ingress_per_s``: as many messages moved from the local bus into the same queue by the
  bridge's ingress (receive with a lock, validate, publish, complete only after the publish);
  ``ratio`` is the second over the first (target >= 0.7). The two alternate for three rounds and
  each reports its median, so a noisy neighbour slows both alike. The ingress publishes a batch
  in one pipelined round trip (kombu's publish batch), which the one-by-one loop cannot, so it
  can beat it: ``batched_publish_per_s`` (the ingress's publisher alone) shows what the bus
  work (receive, complete, ledger) costs on top;
- ``e2e_per_s``: a burst sent to the local bus and answered on the output queue by a real
  ``celery worker`` and ``python -m bridge`` with the no-op echo processor; ``e2e_p50_ms`` and
  ``e2e_p95_ms``: the same path for messages sent one at a time at a steady, unsaturated pace.

The Redis is started as ``REDIS_APPENDFSYNC=auto`` starts it for the local bus (``appendfsync``
in the figures: everysec); ``bridge_ingress_fsync_always_per_s`` is the same ingress, in the
same rounds, on a second Redis that fsyncs every write (as ``auto`` does for Service Bus), and
``fsync_always_vs_default`` the second over the first: what closing the power-loss window costs.

The end-to-end figures are medians over ``TRACING_ROUNDS`` runs with tracing off, alternated with
as many with every process exporting its spans over OTLP to a local receiver:
``tracing_overhead`` is the e2e throughput lost with tracing on, as a fraction (target ≤ 0.10).
``load_avg_before``/``load_avg_after`` are the machine's load averages around the run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from bench.report import median, percentile, write_result
from bridge.bus import OutgoingMessage
from bridge.celery_publisher import CeleryPublisher
from bridge.ingress import Ingress
from bridge.ledger import Ledger
from bridge.local_bus import LocalBus
from bridge.metrics import HEARTBEATS_KEY, Counters
from bridge.routing import TaskRequest
from settings import Route, load_settings
from settings.jsonsafe import DEFAULT_MAX_DEPTH
from settings.redis_server import RedisServer
from tests.support.otlp import running_otlp_receiver
from tests.support.processes import celery_worker_args

ROUTE = Route.parse("bench_iq:echo:bench_oq")
ROUNDS = 3
# End-to-end runs with tracing off and on, alternated (each starts a worker and a bridge).
TRACING_ROUNDS = 2
# Steady pace of the latency phase: far below what the path sustains, so no queue builds up.
LATENCY_RATE_PER_S = 20.0
START_TIMEOUT_SECS = 60.0


def bodies(count: int) -> list[tuple[str, dict[str, object]]]:
    """(message id, body) pairs, fresh ids each call: the bus and the tasks dedupe by id."""
    return [(str(uuid.uuid4()), {"id": str(i)}) for i in range(count)]


def measure_raw_publish(app, count: int) -> float:
    task = app.tasks["processors.echo"]
    messages = bodies(count)
    started = time.perf_counter()
    for message_id, body in messages:
        task.apply_async(
            args=[body],
            kwargs={"out_queue": ROUTE.out_queue, "message_id": message_id},
            task_id=message_id,
            queue="echo",
        )
    return count / (time.perf_counter() - started)


def measure_batched_publish(app, count: int, batch_size: int) -> float:
    """The ingress's publisher alone: what the ingress would reach if the bus cost nothing."""
    publisher = CeleryPublisher(app)
    requests = [
        TaskRequest(
            task_name="processors.echo",
            queue="echo",
            task_id=message_id,
            body=body,
            out_queue=ROUTE.out_queue,
            message_id=message_id,
        )
        for message_id, body in bodies(count)
    ]
    started = time.perf_counter()
    for start in range(0, count, batch_size):
        publisher.publish(requests[start : start + batch_size])
    return count / (time.perf_counter() - started)


def measure_ingress(app, bus: LocalBus, count: int, batch_size: int) -> float:
    bus.send(
        ROUTE.in_queue,
        [
            OutgoingMessage(body=json.dumps(body), message_id=message_id)
            for message_id, body in bodies(count)
        ],
    )
    ingress = Ingress(
        ROUTE,
        bus.receiver(ROUTE.in_queue),
        CeleryPublisher(app),
        Ledger(bus.client),
        Counters(),
        batch_size=batch_size,
        high_water=10 * count,
        max_idle_s=1.0,
        celery_queue="echo",
        max_message_bytes=256 * 1024,
        max_json_depth=DEFAULT_MAX_DEPTH,
    )
    moved = 0
    started = time.perf_counter()
    while moved < count:
        moved += ingress.run_once()
    return count / (time.perf_counter() - started)


@contextmanager
def process(
    args: list[str], env: dict[str, str], log: Path, ready: Callable[[subprocess.Popen], bool]
) -> Iterator[subprocess.Popen]:
    with open(log, "ab") as output:
        child = subprocess.Popen(
            args, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_SECS
            while not ready(child):
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{args[2]} did not start; see {log}")
                time.sleep(0.2)
            yield child
        finally:
            os.killpg(child.pid, signal.SIGTERM)
            child.wait(30)


def measure_e2e(app, bus: LocalBus, env: dict[str, str], logs: Path, burst: int) -> dict:
    worker_name = f"bench-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    worker_args = celery_worker_args(worker_name, 8, loglevel="WARNING")
    with (
        process(
            worker_args,
            env,
            logs / "worker.log",
            lambda _: bool(app.control.ping(destination=[worker_name], timeout=0.5)),
        ),
        process(
            [sys.executable, "-m", "bridge"],
            env,
            logs / "bridge.log",
            lambda child: (
                bus.client.zscore(HEARTBEATS_KEY, f"{socket.gethostname()}:{child.pid}") is not None
            ),
        ),
    ):
        output = bus.receiver(ROUTE.out_queue)

        def collect(expected: int) -> list[float]:
            """Seconds from each result's send to its arrival, as the results come in."""
            latencies: list[float] = []
            while len(latencies) < expected:
                batch = output.receive(500, 1.0)
                arrived = time.time()
                latencies += [arrived - json.loads(m.body)["sent_at"] for m in batch]
                output.complete(batch)
            return latencies

        def send(count: int, pace_s: float = 0.0) -> None:
            for message_id, body in bodies(count):
                bus.send(
                    ROUTE.in_queue,
                    [
                        OutgoingMessage(
                            body=json.dumps({**body, "sent_at": time.time()}), message_id=message_id
                        )
                    ],
                )
                time.sleep(pace_s)

        started = time.perf_counter()
        sender = threading.Thread(target=send, args=(burst,))
        sender.start()
        collect(burst)
        burst_s = time.perf_counter() - started
        sender.join()

        steady = int(LATENCY_RATE_PER_S * 10)
        sender = threading.Thread(target=send, args=(steady, 1 / LATENCY_RATE_PER_S))
        sender.start()
        latencies = collect(steady)
        sender.join()
    return {
        "e2e_per_s": round(burst / burst_s, 1),
        "e2e_burst_messages": burst,
        "e2e_p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "e2e_p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "e2e_latency_messages": steady,
        "e2e_latency_rate_per_s": LATENCY_RATE_PER_S,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000, help="per raw/ingress round")
    parser.add_argument("--burst", type=int, default=2000, help="messages in the e2e burst")
    args = parser.parse_args(argv)

    from worker import create_celery

    defaults = load_settings()
    load_before = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="bench-bridge-") as scratch,
        RedisServer(Path(scratch) / "redis", appendfsync=defaults.redis_fsync_policy) as server,
        RedisServer(Path(scratch) / "redis-always", appendfsync="always") as always,
    ):
        env = {
            **os.environ,
            "REDIS_URL": server.url,
            "CONDUIT_ROUTES": f"{ROUTE.in_queue}:{ROUTE.processor}:{ROUTE.out_queue}",
            "LOG_LEVEL": "WARNING",
            "CONDUIT_ENV_FILE": os.devnull,
        }
        settings = load_settings(redis_url=server.url)
        app = create_celery(settings)
        client = redis.Redis.from_url(server.url, decode_responses=True)
        bus = LocalBus(client)
        always_app = create_celery(load_settings(redis_url=always.url))
        always_client = redis.Redis.from_url(always.url, decode_responses=True)
        always_bus = LocalBus(always_client)
        raw, batched, ingress, ingress_always = [], [], [], []
        for _ in range(ROUNDS):
            raw.append(measure_raw_publish(app, args.messages))
            client.delete("echo")
            batched.append(measure_batched_publish(app, args.messages, settings.bridge_batch_size))
            client.delete("echo")
            ingress.append(measure_ingress(app, bus, args.messages, settings.bridge_batch_size))
            client.delete("echo")
            # The same ingress on a Redis that fsyncs every write (what REDIS_APPENDFSYNC=auto
            # chooses with Service Bus): what closing the power-loss window costs.
            ingress_always.append(
                measure_ingress(always_app, always_bus, args.messages, settings.bridge_batch_size)
            )
            always_client.delete("echo")
        always_app.close()
        always_client.close()
        figures = {
            "raw_publish_per_s": round(median(raw), 1),
            "bridge_ingress_per_s": round(median(ingress), 1),
            "ratio": round(median(ingress) / median(raw), 2),
            "batched_publish_per_s": round(median(batched), 1),
            "ingress_vs_batched_publish": round(median(ingress) / median(batched), 2),
            "messages_per_round": args.messages,
            "rounds": ROUNDS,
            "batch_size": settings.bridge_batch_size,
            "appendfsync": server.appendfsync,
            "bridge_ingress_fsync_always_per_s": round(median(ingress_always), 1),
            "fsync_always_vs_default": round(median(ingress_always) / median(ingress), 2),
        }
        # End to end with tracing off and on (every process exporting OTLP to a local receiver),
        # alternated so the machine's drift falls on both alike.
        untraced, traced = [], []
        with running_otlp_receiver(decode=False) as receiver:
            traced_env = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
            for _ in range(TRACING_ROUNDS):
                untraced.append(measure_e2e(app, bus, env, Path(scratch), args.burst))
                traced.append(measure_e2e(app, bus, traced_env, Path(scratch), args.burst))
            exported = {"requests": receiver.requests, "bytes": receiver.bytes}
        figures |= {key: median([run[key] for run in untraced]) for key in untraced[0]}
        traced_per_s = median([run["e2e_per_s"] for run in traced])
        figures |= {
            "e2e_traced_per_s": round(traced_per_s, 1),
            "e2e_traced_p50_ms": median([run["e2e_p50_ms"] for run in traced]),
            "tracing_overhead": round(1 - traced_per_s / figures["e2e_per_s"], 3),
            "tracing_rounds": TRACING_ROUNDS,
            "otlp_exports": exported,
        }
        app.close()
        client.close()
    figures["load_avg_before"] = [round(load, 2) for load in load_before]
    figures["load_avg_after"] = [round(load, 2) for load in os.getloadavg()]
    write_result(
        "bridge_throughput",
        figures,
        f"ingress {figures['bridge_ingress_per_s']}/s vs raw "
        f"{figures['raw_publish_per_s']}/s (ratio {figures['ratio']}); e2e "
        f"{figures['e2e_per_s']}/s, p50 {figures['e2e_p50_ms']} ms, "
        f"p95 {figures['e2e_p95_ms']} ms; tracing on costs "
        f"{figures['tracing_overhead']:.1%} of e2e throughput",
    )


if __name__ == "__main__":
    main()
