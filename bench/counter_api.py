"""Is Conduit's counter-compatible HTTP API faster than the older counter it replaces?

    python -m bench.counter_api        -> bench/results/counter_api.json

Side by side in one run, each server on its own free port with ONE worker process:

- ``old``: the older counter, re-created from its documented behaviour
  (``../shared/reference/old_counter.py``, or OLD_COUNTER_DIR), served by ``uvicorn`` as it was;
- ``conduit``: Conduit's ``/lock`` + ``/report`` (web/counter.py) under gunicorn with the
  project's own config (web/gunicorn_conf.py, WEB_CONCURRENCY=1), an API key checked on every
  request, the quota in a local redis-server;
- ``token_client``: the direct path, ``SyncTokenClient.lock_tokens`` + ``report_usage``, no HTTP.

Clients are threads with one keep-alive connection each, at 1 and 8 threads, for DURATION_S,
REPEATS times with the servers interleaved (so a busy neighbour slows all alike); figures are
medians over the repeats. ``pairs_per_s`` counts lock + report pairs; ``p50_ms`` / ``p99_ms`` are
per pair. ``ratio_vs_old`` is conduit ÷ old, measured side by side in each repeat, then the median.
The client threads share the 2 cores with the server, as they would on one box.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import median, percentile, write_result
from settings.redis_server import RedisServer, free_port

THREAD_COUNTS = (1, 8)
REPEATS = 3
DURATION_S = 3.0
API_KEY = "bench-" + "k" * 32
# Limits high enough that nothing is refused: the bench measures the accepted path.
BIG_LIMIT = 1_000_000_000
READY_TIMEOUT_SECS = 60.0
REPO_ROOT = Path(__file__).resolve().parents[1]

Pair = Callable[[], None]


def old_counter_dir() -> Path:
    """Where old_counter.py is: OLD_COUNTER_DIR, else ../shared/reference beside the checkout
    (the main checkout's, or a worktree's parent's)."""
    candidates = [os.environ.get("OLD_COUNTER_DIR")] + [
        str(parent / "shared" / "reference") for parent in REPO_ROOT.parents
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "old_counter.py").exists():
            return Path(candidate)
    raise SystemExit("old_counter.py not found: set OLD_COUNTER_DIR to its directory")


class HttpPairs:
    """lock + report over one keep-alive connection per thread."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port, self.headers = port, {"Content-Type": "application/json", **headers}
        self._local = threading.local()

    def _post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=30
            )
        connection.request("POST", path, json.dumps(body), self.headers)
        response = connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}: {payload[:200]!r}")
        return json.loads(payload)

    def pair(self) -> None:
        granted = self._post("/lock", {"app_id": "bench", "token_count": 10})
        if not granted["allowed"]:
            raise RuntimeError(f"refused: {granted}")
        self._post(
            "/report",
            {
                "app_id": "bench",
                "request_id": granted["request_id"],
                "prompt_tokens": 5,
                "completion_tokens": 5,
            },
        )

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()


def measure(pair: Pair, threads: int) -> dict[str, float]:
    """Pairs per second and per-pair latency with ``threads`` threads for DURATION_S."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def client(index: int) -> None:
        start.wait()
        try:
            while time.perf_counter() < stop_at[0]:
                began = time.perf_counter()
                pair()
                latencies[index].append(time.perf_counter() - began)
        except BaseException as error:  # noqa: BLE001 - raised below in the main thread
            errors.append(error)

    workers = [threading.Thread(target=client, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    stop_at[0] = time.perf_counter() + DURATION_S
    start.wait()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    flat = [latency for per_thread in latencies for latency in per_thread]
    return {
        "pairs_per_s": len(flat) / DURATION_S,
        "p50_ms": percentile(flat, 0.5) * 1000,
        "p99_ms": percentile(flat, 0.99) * 1000,
    }


def wait_for_port(port: int, process: Any) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on {port} exited ({process.returncode})")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/health")
            connection.getresponse().read()
            connection.close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on {port} not ready in {READY_TIMEOUT_SECS} s")


def main() -> None:
    import subprocess

    from quota import SyncTokenClient
    from settings import load_settings

    work_dir = Path(tempfile.mkdtemp(prefix="bench-counter-"))
    with RedisServer(work_dir / "redis") as server:
        env = {
            **os.environ,
            "CONDUIT_ENV_FILE": os.devnull,
            "REDIS_URL": server.url,
            "APP_TPM_QUOTA": str(BIG_LIMIT),
            "APP_RPM_QUOTA": str(BIG_LIMIT),
            "AUTH_API_KEY": API_KEY,
            "WEB_CONCURRENCY": "1",
            "LOG_LEVEL": "WARNING",
        }
        old_port, conduit_port = free_port(), free_port()
        logs = [open(work_dir / name, "wb") for name in ("old.log", "conduit.log")]
        servers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "old_counter:app",
                    "--port",
                    str(old_port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                cwd=old_counter_dir(),
                env=env,
                stdout=logs[0],
                stderr=subprocess.STDOUT,
            ),
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "-c",
                    "python:web.gunicorn_conf",
                    "--bind",
                    f"127.0.0.1:{conduit_port}",
                    "web.app:create_app()",
                ],
                cwd=REPO_ROOT,
                env=env,
                stdout=logs[1],
                stderr=subprocess.STDOUT,
            ),
        ]
        try:
            wait_for_port(conduit_port, servers[1])
            # The old counter has no /health: any answer (404) means it is up.
            wait_for_port(old_port, servers[0])
            old = HttpPairs(old_port, {})
            conduit = HttpPairs(conduit_port, {"X-API-Key": API_KEY})
            os.environ.update({name: env[name] for name in ("REDIS_URL", "CONDUIT_ENV_FILE")})
            settings = load_settings(redis_url=server.url, tpm_quota=BIG_LIMIT, rpm_quota=BIG_LIMIT)
            direct = SyncTokenClient("bench", settings=settings)

            def direct_pair() -> None:
                allowed, request_id, error = direct.lock_tokens(10)
                if not allowed or request_id is None:
                    raise RuntimeError(f"refused: {error}")
                direct.report_usage(request_id, 5, 5)

            systems: dict[str, Pair] = {
                "old": old.pair,
                "conduit": conduit.pair,
                "token_client": direct_pair,
            }
            for pair in systems.values():  # warm up: imports, scripts, connections
                for _ in range(50):
                    pair()
            runs: dict[str, dict[int, list[dict[str, float]]]] = {
                name: {threads: [] for threads in THREAD_COUNTS} for name in systems
            }
            ratios: dict[int, list[float]] = {threads: [] for threads in THREAD_COUNTS}
            for _ in range(REPEATS):
                for threads in THREAD_COUNTS:
                    for name, pair in systems.items():
                        runs[name][threads].append(measure(pair, threads))
                    ratios[threads].append(
                        runs["conduit"][threads][-1]["pairs_per_s"]
                        / runs["old"][threads][-1]["pairs_per_s"]
                    )
            direct.close()
            old.close()
            conduit.close()
        finally:
            for process in servers:
                process.terminate()
                process.wait(15)
            for log in logs:
                log.close()

    def figures(name: str, key: str) -> dict[str, float]:
        return {
            str(threads): round(median([run[key] for run in runs[name][threads]]), 2)
            for threads in THREAD_COUNTS
        }

    result: dict[str, Any] = {
        "duration_s": DURATION_S,
        "repeats": REPEATS,
        "threads": list(THREAD_COUNTS),
        "server_processes": 1,
        "load_average": os.getloadavg(),
        "ratio_vs_old": {
            str(threads): round(median(ratios[threads]), 2) for threads in THREAD_COUNTS
        },
        **{
            f"{name}_{key}": figures(name, key)
            for name in ("old", "conduit", "token_client")
            for key in ("pairs_per_s", "p50_ms", "p99_ms")
        },
    }
    ratio = result["ratio_vs_old"]
    write_result(
        "counter_api",
        result,
        f"conduit /lock+/report {ratio['1']}x the older counter at 1 thread, {ratio['8']}x at 8 "
        f"(load {os.getloadavg()[0]:.1f})",
    )


if __name__ == "__main__":
    main()
