"""Is Conduit's counter-compatible HTTP API faster than the older counter it replaces?

    python -m bench.counter_api        -> bench/results/counter_api.json

Side by side in one run, each server on its own free port with ONE server process:

- ``old``: the older counter, re-created from its documented behaviour
  (``../shared/reference/old_counter.py``, or OLD_COUNTER_DIR), served by ``uvicorn`` as it was
  installed (``pip install fastapi uvicorn``: h11 and asyncio's loop, named on the command line
  because this venv has uvloop and httptools for Conduit, which uvicorn would otherwise pick),
  its counts in the process's memory;
- ``old_fast``: the same given uvloop and httptools, as an upgrade of its own could have:
  ``ratio_vs_old_fast``;
- ``counter``: Conduit's counter server (web/counter_server.py, ``python -m web.counter_server``,
  WEB_CONCURRENCY=1), an API key checked on every request, the quota in a local redis-server,
  locks granted from leases (quota/leases.py); ``ratio_vs_old`` is this ÷ ``old``;
- ``counter_no_leases``: the same with QUOTA_LEASE_SECONDS=0, a Redis round trip per request:
  ``no_leases_ratio_vs_old``;
- ``web``: the same routes on the web app (Flask under gunicorn, web/gunicorn_conf.py), for
  single-port set-ups: ``web_ratio_vs_old``;
- ``token_client``: the direct path, ``SyncTokenClient.lock_tokens`` + ``report_usage``, no HTTP.

A pair reports its lock at once, as the older counter's benchmark did; on the counter server that
report reaches the lock's lease before its grant is written to Redis, and is settled in memory. A
real caller reports after its model call: ``*_reports_later`` pairs report each lock REPORT_LATER_S
after it (each thread keeps its unreported locks), when the grant is a lock in Redis and the
report one round trip: ``reports_later_ratio_vs_old`` (counter ÷ old, both reporting later).

Plus what bounds any server here: ``floor_pairs_per_s``, a server answering fixed JSON at once
(uvicorn, httptools, no Redis) under the same client, and ``redis_ping_us``, one Redis round trip
from Python; and the counter server with WEB_CONCURRENCY=2 at 8 threads
(``counter_2_processes_pairs_per_s``), for how it scales with processes.

Clients are threads with one keep-alive connection each, at 1 and 8 threads, for DURATION_S,
REPEATS times with the servers interleaved (so a busy neighbour slows all alike); figures are
medians over the repeats. The client writes prepared request bytes and reads just enough of each
answer (:class:`HttpPairs`): http.client costs more per request than the servers measured, which
capped what any server could show (a server answering at once reached ~4,700 pairs/s at 8
threads under it, less than twice the older counter). ``pairs_per_s`` counts lock + report
pairs; ``p50_ms`` / ``p99_ms`` are per pair. The client threads share the 2 cores with the
servers, as they would on one box.
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from bench.report import median, percentile, write_result
from settings.redis_server import RedisServer, free_port

THREAD_COUNTS = (1, 8)
REPEATS = 5
DURATION_S = 2.0
API_KEY = "bench-" + "k" * 32
# Limits high enough that nothing is refused: the bench measures the accepted path.
BIG_LIMIT = 1_000_000_000
# How long after its lock a "reports later" pair reports: well past the lease's write (5 ms).
REPORT_LATER_S = 0.02
READY_TIMEOUT_SECS = 60.0
REPO_ROOT = Path(__file__).resolve().parents[1]

Pair = Callable[[], None]
# A granted lock's id in its answer, and the report that names it.
GRANTED_ID = re.compile(rb'"allowed":\s*true.*?"request_id":\s*"([^"]+)"')
REPORT_BODY = b'{"app_id": "bench", "request_id": "%s", "prompt_tokens": 5, "completion_tokens": 5}'


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
    """lock + report over one keep-alive connection per thread, with as little client work as
    an HTTP/1.1 exchange allows: request bytes prepared once, answers read by Content-Length."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._head = f"Host: 127.0.0.1\r\nContent-Type: application/json\r\n{head}"
        self._head_bytes = self._head.encode()
        self._lock = self._request("/lock", {"app_id": "bench", "token_count": 10})
        self._local = threading.local()

    def _request(self, path: str, body: dict[str, object]) -> bytes:
        payload = json.dumps(body).encode()
        return (
            f"POST {path} HTTP/1.1\r\n{self._head}Content-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload

    def _exchange(self, request: bytes) -> bytes:
        """Send ``request``; the body of its 200 answer."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = socket.create_connection(
                ("127.0.0.1", self.port), timeout=30
            )
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._local.buffer = b""
        connection.sendall(request)
        buffer = self._local.buffer
        while (end_of_head := buffer.find(b"\r\n\r\n")) < 0:
            buffer += _received(connection)
        head = buffer[:end_of_head].lower()
        length_at = head.index(b"content-length:") + len(b"content-length:")
        length = int(head[length_at : head.find(b"\r\n", length_at) % (len(head) + 1)])
        end = end_of_head + 4 + length
        while len(buffer) < end:
            buffer += _received(connection)
        self._local.buffer = buffer[end:]
        if not head.startswith(b"http/1.1 200"):
            raise RuntimeError(f"answered {buffer[:end][:300]!r}")
        return buffer[end_of_head + 4 : end]

    def _locked(self) -> bytes:
        """The request id of a granted lock: found in the answer's bytes, not parsed as JSON,
        which costs the client more than the search (either server's JSON: compact or not)."""
        answer = self._exchange(self._lock)
        granted = GRANTED_ID.search(answer)
        if granted is None:
            raise RuntimeError(f"refused: {answer[:300]!r}")
        return granted[1]

    def _report(self, request_id: bytes) -> None:
        payload = REPORT_BODY % request_id
        self._exchange(
            b"POST /report HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s"
            % (self._head_bytes, len(payload), payload)
        )

    def pair(self) -> None:
        self._report(self._locked())

    def pair_reporting_later(self) -> None:
        """Lock, then report the oldest lock this thread holds if it is REPORT_LATER_S old."""
        held = getattr(self._local, "held", None)
        if held is None:
            held = self._local.held = collections.deque()
        held.append((time.perf_counter(), self._locked()))
        if time.perf_counter() - held[0][0] >= REPORT_LATER_S:
            self._report(held.popleft()[1])

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()


def _received(connection: socket.socket) -> bytes:
    data = connection.recv(65536)
    if not data:
        raise RuntimeError("the server closed the connection")
    return data


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


FIXED_ANSWER = json.dumps({"allowed": True, "request_id": "x", "success": True}).encode()


async def fixed_answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor: an ASGI app that reads the request and answers at once, with no Redis."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(FIXED_ANSWER)),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": FIXED_ANSWER})


def redis_ping_us(url: str, count: int = 5000) -> float:
    """Median of ``count`` PING round trips from Python (µs): the least a quota decision costs."""
    import redis

    client = redis.Redis.from_url(url)
    timings = []
    for _ in range(count):
        began = time.perf_counter()
        client.ping()
        timings.append(time.perf_counter() - began)
    client.close()
    return median(timings) * 1e6


class Server(NamedTuple):
    port: int
    command: list[str]
    cwd: Path
    env: dict[str, str]  # added to the benchmark's environment


def servers() -> dict[str, Server]:
    """Every server measured, each on a free port."""
    uvicorn = [sys.executable, "-m", "uvicorn", "--log-level", "warning", "--no-access-log"]
    counter_server = [sys.executable, "-m", "web.counter_server"]
    names = ("old", "old_fast", "counter", "counter_no_leases", "web", "floor", "counter_2")
    port = {name: free_port() for name in names}

    def older_counter(name: str, *options: str) -> Server:
        command = [*uvicorn, "old_counter:app", "--port", str(port[name]), *options]
        return Server(port[name], command, old_counter_dir(), {})

    def counter(name: str, **env: str) -> Server:
        return Server(
            port[name], counter_server, REPO_ROOT, {"COUNTER_PORT": str(port[name]), **env}
        )

    return {
        "old": older_counter("old", "--loop", "asyncio", "--http", "h11"),
        "old_fast": older_counter("old_fast", "--loop", "uvloop", "--http", "httptools"),
        "counter": counter("counter"),
        "counter_no_leases": counter("counter_no_leases", QUOTA_LEASE_SECONDS="0"),
        "web": Server(
            port["web"],
            [sys.executable, "-m", "gunicorn", "-c", "python:web.gunicorn_conf",
             "--bind", f"127.0.0.1:{port['web']}", "web.app:create_app()"],
            REPO_ROOT, {},
        ),
        "floor": Server(
            port["floor"],
            [*uvicorn, "bench.counter_api:fixed_answer", "--port", str(port["floor"]),
             "--loop", "uvloop", "--http", "httptools"],
            REPO_ROOT, {},
        ),
        "counter_2": counter("counter_2", WEB_CONCURRENCY="2"),
    }  # fmt: skip


# Each ratio: its numerator and denominator system, measured in the same repeat.
RATIOS = {
    "ratio_vs_old": ("counter", "old"),
    "ratio_vs_old_fast": ("counter", "old_fast"),
    "no_leases_ratio_vs_old": ("counter_no_leases", "old"),
    "web_ratio_vs_old": ("web", "old"),
    "reports_later_ratio_vs_old": ("counter_reports_later", "old_reports_later"),
}
Runs = dict[str, dict[int, list[dict[str, float]]]]


def measure_all(systems: dict[str, Pair]) -> tuple[Runs, dict[str, dict[int, list[float]]]]:
    """Every system at every thread count, REPEATS times interleaved; and each repeat's RATIOS."""
    runs: Runs = {name: {threads: [] for threads in THREAD_COUNTS} for name in systems}
    ratios: dict[str, dict[int, list[float]]] = {
        name: {threads: [] for threads in THREAD_COUNTS} for name in RATIOS
    }
    for _ in range(REPEATS):
        for threads in THREAD_COUNTS:
            for name, pair in systems.items():
                if name == "counter_2" and threads == 1:
                    continue  # one connection is served by one process: nothing to scale
                runs[name][threads].append(measure(pair, threads))
            for name, (numerator, denominator) in RATIOS.items():
                ratios[name][threads].append(
                    runs[numerator][threads][-1]["pairs_per_s"]
                    / runs[denominator][threads][-1]["pairs_per_s"]
                )
    return runs, ratios


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
        processes: dict[str, subprocess.Popen[bytes]] = {}
        logs = []
        plan = servers()
        try:
            for name, spec in plan.items():
                log = open(work_dir / f"{name}.log", "wb")
                logs.append(log)
                processes[name] = subprocess.Popen(
                    spec.command,
                    cwd=spec.cwd,
                    env={**env, **spec.env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            for name, spec in plan.items():
                # The older counter and the floor have no /health: any answer (404) means up.
                wait_for_port(spec.port, processes[name])
            key = {"X-API-Key": API_KEY}
            clients = {
                name: HttpPairs(spec.port, {} if name in ("old", "old_fast", "floor") else key)
                for name, spec in plan.items()
            }
            os.environ.update({name: env[name] for name in ("REDIS_URL", "CONDUIT_ENV_FILE")})
            settings = load_settings(redis_url=server.url, tpm_quota=BIG_LIMIT, rpm_quota=BIG_LIMIT)
            direct = SyncTokenClient("bench", settings=settings)

            def direct_pair() -> None:
                allowed, request_id, error = direct.lock_tokens(10)
                if not allowed or request_id is None:
                    raise RuntimeError(f"refused: {error}")
                direct.report_usage(request_id, 5, 5)

            systems: dict[str, Pair] = {name: client.pair for name, client in clients.items()}
            systems["token_client"] = direct_pair
            for name in ("old", "counter"):
                systems[f"{name}_reports_later"] = clients[name].pair_reporting_later
            for pair in systems.values():  # warm up: imports, scripts, connections
                for _ in range(200):
                    pair()
            runs, ratios = measure_all(systems)
            ping_us = redis_ping_us(server.url)
            direct.close()
            for client in clients.values():
                client.close()
        finally:
            for process in processes.values():
                process.terminate()
            for process in processes.values():
                process.wait(15)
            for log in logs:
                log.close()

    def figures(name: str, key: str) -> dict[str, float]:
        return {
            str(threads): round(median([run[key] for run in runs[name][threads]]), 2)
            for threads in THREAD_COUNTS
            if runs[name][threads]
        }

    def ratio(name: str) -> dict[str, float]:
        return {str(threads): round(median(ratios[name][threads]), 2) for threads in THREAD_COUNTS}

    result: dict[str, Any] = {
        "duration_s": DURATION_S,
        "repeats": REPEATS,
        "threads": list(THREAD_COUNTS),
        "server_processes": 1,
        "report_later_s": REPORT_LATER_S,
        "load_average": os.getloadavg(),
        **{name: ratio(name) for name in RATIOS},
        "redis_ping_us": round(ping_us, 1),
        "counter_2_processes_pairs_per_s": figures("counter_2", "pairs_per_s"),
        **{
            f"{name}_{key}": figures(name, key)
            for name in runs
            if name != "counter_2"
            for key in ("pairs_per_s", "p50_ms", "p99_ms")
        },
    }
    ratios_now = result["ratio_vs_old"]
    write_result(
        "counter_api",
        result,
        f"conduit's counter server {ratios_now['1']}x the older counter at 1 thread, "
        f"{ratios_now['8']}x at 8 (reporting later {result['reports_later_ratio_vs_old']}; "
        f"vs the older counter on uvloop+httptools {result['ratio_vs_old_fast']}; "
        f"load {os.getloadavg()[0]:.1f})",
    )


if __name__ == "__main__":
    main()
