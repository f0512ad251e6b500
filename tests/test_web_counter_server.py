"""``python -m web.counter_server`` as it runs in production: a real process (two with
WEB_CONCURRENCY=2) on its own port, over real HTTP. What it answers is tested route by route in
test_web_counter.py, against the web app's answers; here: that the entry point serves them, with
every process sharing one quota, and that what uvicorn would let through unbounded is bounded."""

from __future__ import annotations

import http.client
import json
import re
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from settings.redis_server import free_port
from tests.support.processes import ManagedProcess
from tests.support.waiting import wait_until
from web.counter_server import MAX_HEAD_BYTES
from web.strict_json import MAX_REQUEST_BYTES

API_KEY = "counter-" + "k" * 32
PROCESSES = 2
# QUOTA_LEASE_SECONDS and the time a process takes to give a lease's room back (quota/leases.py).
LEASE_HOLD_S = 0.1


def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body, {"X-API-Key": API_KEY, **(headers or {})})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.fixture
def counter_port(conduit_env: dict[str, str], tmp_path: Path) -> Iterator[int]:
    port = free_port()
    env = {
        **conduit_env,
        "COUNTER_PORT": str(port),
        "WEB_CONCURRENCY": str(PROCESSES),
        "AUTH_API_KEY": API_KEY,
        "APP_TPM_QUOTA": "1000",
        "APP_RPM_QUOTA": "600",
    }
    server = ManagedProcess(
        [sys.executable, "-m", "web.counter_server"],
        env,
        tmp_path / "counter.log",
        ready=lambda: request(port, "GET", "/health")[0] == 200,
        name="counter server",
    )
    with server:
        # uvicorn's supervisor spawns the server processes (beside multiprocessing's tracker).
        assert server.process is not None
        supervisor = psutil.Process(server.process.pid)

        def servers() -> int:
            spawned = [child.cmdline() for child in supervisor.children()]
            return sum("spawn_main" in " ".join(cmdline) for cmdline in spawned)

        wait_until(lambda: servers() == PROCESSES, timeout=60, what=f"{PROCESSES} processes")
        yield port


def lock_waiting_out_leases(port: int, body: bytes) -> dict:
    """POST /lock, again while the refusal says the room is held by another process's lease
    (it tells to retry within QUOTA_LEASE_SECONDS and the time to give it back)."""
    while True:
        status, answer = request(port, "POST", "/lock", body)
        assert status == 200
        retry = re.search(r"retry in ([0-9.]+) s", answer["message"] or "")
        if answer["allowed"] or not retry or float(retry[1]) > LEASE_HOLD_S:
            return answer
        time.sleep(float(retry[1]))


@pytest.mark.slow
def test_the_counter_server_shares_one_quota_across_its_processes(counter_port: int) -> None:
    lock = json.dumps({"app_id": "app1", "token_count": 100}).encode()
    # New connections land on either process; all of them count against the one quota in Redis,
    # each process granting from leases of it.
    granted = [lock_waiting_out_leases(counter_port, lock) for _ in range(10)]
    assert [answer["message"] for answer in granted if not answer["allowed"]] == []
    refused = lock_waiting_out_leases(counter_port, lock)
    assert refused["allowed"] is False
    assert refused["message"].startswith("Token limit would be exceeded")

    # Each lock is reported once, whichever process it reaches.
    for answer in granted[:5]:
        report = {"app_id": "app1", "request_id": answer["request_id"]}
        report |= {"prompt_tokens": 60, "completion_tokens": 40}
        body = json.dumps(report).encode()
        assert request(counter_port, "POST", "/report", body) == (200, {"success": True})
        status, again = request(counter_port, "POST", "/report", body)
        assert status == 400 and "request_id" in again["detail"]

    def locked() -> tuple[int, int]:
        counts = request(counter_port, "GET", "/status")[1]
        return counts["locked_tokens"], counts["locked_requests"]

    # What each process wrote behind its answers reaches Redis.
    wait_until(lambda: locked() == (500, 5), timeout=10, what="5 locks of 100 tokens left")

    assert request(counter_port, "GET", "/status", headers={"X-API-Key": "wrong"})[0] == 401
    status, missing = request(counter_port, "GET", "/api/v1/quota")
    assert status == 404 and "web app's port" in missing["detail"]


@pytest.mark.slow
def test_bodies_and_headers_are_bounded(counter_port: int) -> None:
    status, body = request(counter_port, "POST", "/lock", b"x" * (MAX_REQUEST_BYTES + 1))
    assert status == 413 and "detail" in body

    status, body = request(
        counter_port, "GET", "/status", headers={"X-Padding": "p" * (MAX_HEAD_BYTES + 1)}
    )
    assert status == 431 and "headers" in body["detail"]
    # The server is still there for everyone else.
    assert request(counter_port, "GET", "/health") == (200, {"status": "healthy"})

    # A body under the bound that arrives in pieces after its head is a body, not more head.
    size = MAX_REQUEST_BYTES - 10
    with socket.create_connection(("127.0.0.1", counter_port), timeout=30) as peer:
        peer.sendall(
            f"POST /lock HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
        )
        for _ in range(4):
            peer.sendall(b"x" * (size // 4))
            time.sleep(0.05)  # separate segments, so the server reads separate chunks
        peer.sendall(b"x" * (size % 4))
        answer = http.client.HTTPResponse(peer)
        answer.begin()
        assert answer.status == 400
        assert "not valid JSON" in json.loads(answer.read())["detail"]
