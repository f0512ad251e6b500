"""The bridge for real: local bus in, real `celery worker` and `python -m bridge` processes, a
real Redis; every result out exactly once, whatever is killed or stopped along the way. Some run
twice: everything on one Redis, and everything but Celery's broker (the local bus, ledger,
outbox, bridge stats) on a real three-master Redis Cluster."""

from __future__ import annotations

import json
import signal
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from bridge.bus import OutgoingMessage
from bridge.ledger import ledger_key
from bridge.local_bus import LocalBus, queue_keys
from bridge.metrics import HEARTBEATS_KEY, read_bridge_stats
from settings import load_settings
from settings.redis_server import RedisServer, free_port
from settings.state_redis import state_redis
from tasks.outbox import stream_key
from tests.support.processes import ManagedProcess, celery_worker_args, python_args

pytestmark = pytest.mark.slow

# Short locks, reclaim, visibility and republish times, so what a killed process held comes
# back within the test; a low high-water mark keeps the ingress working (and killable) to the end.
STACK_ENV = {
    "CONDUIT_ROUTES": "echo_iq:echo:echo_oq,ghost_iq:ghost:ghost_oq",
    "LOCAL_BUS_LOCK_DURATION_SECONDS": "3",
    "BRIDGE_RECLAIM_IDLE_SECONDS": "3",
    "BRIDGE_MAX_IDLE_SECONDS": "1",
    "BRIDGE_HIGH_WATER": "50",
    "TASK_TIME_LIMIT_SECONDS": "4",
    "BROKER_VISIBILITY_TIMEOUT_SECONDS": "6",
    "BRIDGE_REPUBLISH_AFTER_SECONDS": "10",
    "LOG_LEVEL": "INFO",
}
# The state on the broker's Redis, and on a Redis Cluster (tests/conftest.py's state_url).
ON_PLAIN_AND_CLUSTER = pytest.mark.parametrize("state_url", ["plain", "cluster"], indirect=True)
# Generous: a loaded 2-core machine, a worker restart and a visibility timeout on the way.
DELIVERY_TIMEOUT_SECS = 150.0


class Stack:
    """A bus client and the worker and bridge processes of one test: Celery's broker on
    ``redis_url``, the state (local bus, ledger, outbox) on ``state_url`` (the same Redis when
    None or equal)."""

    def __init__(
        self, redis_url: str, env: dict[str, str], log_dir: Path, state_url: str | None = None
    ) -> None:
        state_url = state_url or redis_url
        self.env = {**env, **STACK_ENV, "REDIS_URL": redis_url, "STATE_REDIS_URL": state_url}
        self.log_dir = log_dir
        self.broker = redis.Redis.from_url(redis_url, decode_responses=True)
        self.client = state_redis(
            load_settings(redis_url=redis_url, state_redis_url=state_url),
            broker=self.broker,
            decode_responses=True,
        )
        self.bus = LocalBus(self.client)
        self.app: Celery | None = None
        self.processes: list[ManagedProcess] = []

    def start_worker(self, concurrency: int = 4) -> ManagedProcess:
        from worker import create_celery

        app = self.app = self.app or create_celery(load_settings(redis_url=self.env["REDIS_URL"]))
        name = f"bridge-test-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        args = celery_worker_args(name, concurrency)
        return self._start(
            args, name, lambda _: bool(app.control.ping(destination=[name], timeout=0.5))
        )

    def start_bridge(self) -> ManagedProcess:
        def ready(process: ManagedProcess) -> bool:
            bridge_id = f"{socket.gethostname()}:{process.pid}"
            return self.client.zscore(HEARTBEATS_KEY, bridge_id) is not None

        return self._start(python_args("-m", "bridge"), "bridge", ready)

    def _start(
        self, args: list[str], name: str, ready: Callable[[ManagedProcess], bool]
    ) -> ManagedProcess:
        process = ManagedProcess(
            args, self.env, self.log_dir / f"{name}-{len(self.processes)}.log", name=name
        )
        process.ready = lambda: ready(process)
        self.processes.append(process)
        return process.start()

    def send(self, count: int, queue: str = "echo_iq") -> None:
        for start in range(0, count, 100):
            self.bus.send(
                queue,
                [
                    OutgoingMessage(body=json.dumps({"id": str(i)}), message_id=f"m-{i}")
                    for i in range(start, min(count, start + 100))
                ],
            )

    def results(self) -> Counter[str]:
        return Counter(json.loads(m.body)["id"] for m in self.bus.peek("echo_oq", 10_000))

    def settled(self) -> bool:
        """Nothing left anywhere between the input queue and the output queue."""
        return (
            not self.bus.peek("echo_iq", 1)
            and self.broker.llen("echo") == 0
            and self.broker.hlen("unacked") == 0
            and self.client.xlen(stream_key("echo_oq")) == 0
            and self.client.zcard(ledger_key("echo_oq")) == 0
        )

    def wait_for_results(self, at_least: int, process: ManagedProcess) -> None:
        process.wait_until(
            lambda: sum(self.results().values()) >= at_least,
            DELIVERY_TIMEOUT_SECS,
            f"{at_least} results",
        )

    def describe(self, count: int) -> str:
        """Where the messages are, for a failure message."""
        missing = sorted({str(i) for i in range(count)} - set(self.results()), key=int)
        return (
            f"results={sum(self.results().values())} missing={missing[:20]} "
            f"inputs={len(self.bus.peek('echo_iq', 10_000))} "
            f"dead={len(self.bus.dead_letters('echo_iq', 10_000))} "
            f"celery_queue={self.broker.llen('echo')} unacked={self.broker.hlen('unacked')} "
            f"outbox={self.client.xlen(stream_key('echo_oq'))} "
            f"ledger={self.client.zcard(ledger_key('echo_oq'))}"
        )

    def assert_each_result_exactly_once(self, count: int, process: ManagedProcess) -> None:
        try:
            process.wait_until(
                lambda: sum(self.results().values()) >= count and self.settled(),
                DELIVERY_TIMEOUT_SECS,
                f"all {count} results and an idle pipeline",
            )
        except TimeoutError as error:
            raise AssertionError(self.describe(count)) from error
        results = self.results()
        assert set(results) == {str(i) for i in range(count)}
        assert results.most_common(1)[0][1] == 1, f"duplicates: {results.most_common(3)}"

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        if self.app is not None:
            self.app.close()
        if self.client is not self.broker:
            self.client.close()
        self.broker.close()


@pytest.fixture
def stack(
    redis_url: str, state_url: str, conduit_env: dict[str, str], tmp_path: Path
) -> Iterator[Stack]:
    stack = Stack(redis_url, conduit_env, tmp_path, state_url)
    yield stack
    stack.stop()


@ON_PLAIN_AND_CLUSTER
def test_a_thousand_messages_in_a_thousand_results_out(stack):
    stack.start_worker()
    bridge = stack.start_bridge()
    stack.send(1000)
    stack.assert_each_result_exactly_once(1000, bridge)
    bridge.stop()
    stats = read_bridge_stats(stack.client, stack.broker)
    [route] = [r for r in stats["routes"] if r["in_queue"] == "echo_iq"]
    assert (route["received"], route["published"], route["sent"]) == (1000, 1000, 1000)
    assert route["dead_lettered"] == 0 and route["outbox_lag"] == 0
    if stack.client is not stack.broker:
        # All of Conduit's own keys went to the cluster; the broker holds only Celery's.
        assert list(stack.broker.scan_iter("conduit:*")) == []


def test_bridge_killed_mid_batch_twice_still_sends_each_result_once(stack):
    stack.start_worker()
    stack.send(1000)
    for results_before_kill in (150, 450):
        bridge = stack.start_bridge()
        stack.wait_for_results(results_before_kill, bridge)
        bridge.kill()
    stack.assert_each_result_exactly_once(1000, stack.start_bridge())


def test_worker_killed_mid_task_still_sends_each_result_once(stack):
    worker = stack.start_worker()
    bridge = stack.start_bridge()
    stack.send(1000)
    stack.wait_for_results(300, bridge)
    worker.kill()
    stack.start_worker()
    stack.assert_each_result_exactly_once(1000, bridge)


@ON_PLAIN_AND_CLUSTER
def test_a_task_the_broker_loses_is_published_again(stack):
    bridge = stack.start_bridge()
    stack.send(10)
    bridge.wait_until(lambda: stack.broker.llen("echo") == 10, 30, "10 published tasks")
    stack.broker.rpop("echo")  # what a worker killed as it took a task leaves behind
    stack.start_worker()
    stack.assert_each_result_exactly_once(10, bridge)
    assert "publishing again 1 task(s) the broker lost" in bridge.output()


def test_sigterm_drains_without_losing_or_duplicating(stack):
    stack.start_worker()
    bridge = stack.start_bridge()
    stack.send(1000)
    stack.wait_for_results(300, bridge)
    bridge.signal(signal.SIGTERM)
    assert bridge.process.wait(30) == 0
    # Drained: no input message still locked, no result taken and left unsent.
    assert stack.client.zcard(queue_keys("echo_iq")["locked"]) == 0
    assert stack.client.xpending(stream_key("echo_oq"), "conduit-bridge")["pending"] == 0
    assert "bridge stopped" in bridge.output()
    stack.assert_each_result_exactly_once(1000, stack.start_bridge())


@ON_PLAIN_AND_CLUSTER
def test_malformed_and_unroutable_messages_are_dead_lettered_and_the_bridge_carries_on(stack):
    stack.start_worker()
    # A queue no route reads: reported, not left to sit silently (issue 10.16).
    stack.bus.send("nowhere_iq", [OutgoingMessage(body='{"id": "1"}', message_id="stray")])
    bridge = stack.start_bridge()
    bad = {"json": "not json", "array": "[1, 2]", "fields": '{"no_id": true}'}
    stack.bus.send(
        "echo_iq", [OutgoingMessage(body=body, message_id=name) for name, body in bad.items()]
    )
    stack.bus.send("ghost_iq", [OutgoingMessage(body='{"id": "1"}', message_id="ghost")])
    stack.send(1)
    stack.assert_each_result_exactly_once(1, bridge)

    def dead(queue: str) -> dict[str, tuple[str, str]]:
        return {
            m.message_id: (m.dead_letter_reason, m.dead_letter_description)
            for m in stack.bus.dead_letters(queue, 10)
        }

    bridge.wait_until(
        lambda: len(dead("echo_iq")) == 3 and dead("ghost_iq"), 30, "the dead letters"
    )
    reasons = dead("echo_iq")
    assert reasons["json"] == (
        "MalformedJson",
        "body is not valid JSON: Expecting value: line 1 column 1 (char 0)",
    )
    assert reasons["array"] == ("MalformedJson", "body must be a JSON object, not list")
    assert reasons["fields"] == ("InvalidFields", "field 'id': Field required")
    assert dead("ghost_iq")["ghost"][0] == "UnknownProcessor"
    assert "'ghost'" in dead("ghost_iq")["ghost"][1]
    assert read_bridge_stats(stack.client, stack.broker)["unrouted"]["queues"] == [
        {"queue": "nowhere_iq", "messages": 1}
    ]
    assert "messages wait in queue(s) no route reads: nowhere_iq (1)" in bridge.output()
    assert bridge.process.poll() is None


def test_redis_stopped_for_five_seconds_loses_nothing(conduit_env, tmp_path):
    # A Redis of this test's own, restarted on the same port and data directory (its AOF).
    server = RedisServer(tmp_path / "redis", port=free_port()).start()
    stack = Stack(server.url, conduit_env, tmp_path)
    try:
        worker = stack.start_worker()
        bridge = stack.start_bridge()
        stack.send(500)
        stack.wait_for_results(100, bridge)
        server.stop()
        time.sleep(5)  # the outage under test: five seconds without Redis
        server.start()
        # kombu 5.7 can crash the worker as it loses the broker (an AttributeError while it
        # restores unacked messages); deployments restart a worker that died or stopped
        # answering (compose: restart: unless-stopped), so this test does too. What it checks
        # is that nothing is lost either way.
        try:
            worker.wait_ready(20)
        except (RuntimeError, TimeoutError):
            worker.kill()
            stack.start_worker()
        stack.assert_each_result_exactly_once(500, bridge)
        assert bridge.running.poll() is None
    finally:
        stack.stop()
        server.stop()


def test_an_echo_of_a_lone_surrogate_ends_in_exactly_one_result(stack):
    # Issue 10.12: "\ud800" is valid JSON text but no UTF-8 string; writing the echo's result
    # failed outside the processor, and the sweeper republished the task forever.
    stack.start_worker()
    bridge = stack.start_bridge()
    stack.bus.send(
        "echo_iq",
        [OutgoingMessage(body='{"id": "0", "text": "a\\ud800b"}', message_id="m-0")],
    )
    stack.assert_each_result_exactly_once(1, bridge)
    [result] = stack.bus.peek("echo_oq", 10)
    assert json.loads(result.body) == {"id": "0", "text": "a\ud800b", "message": "SUCCESS"}


def test_a_deeply_nested_message_is_dead_lettered_alone_and_its_batch_answered(stack):
    # Issue 10.10: ~1 KB, 500 levels deep in an extra field of a valid message. It made the
    # bridge exit on every delivery, until its whole batch was dead-lettered.
    stack.start_worker()
    bridge = stack.start_bridge()
    nested = '{"id": "deep", "extra": ' + "[" * 500 + "]" * 500 + "}"
    stack.bus.send(
        "echo_iq",
        [
            OutgoingMessage(body='{"id": "0"}', message_id="m-0"),
            OutgoingMessage(body=nested, message_id="deep"),
            OutgoingMessage(body='{"id": "1"}', message_id="m-1"),
        ],
    )
    stack.assert_each_result_exactly_once(2, bridge)
    [dead] = stack.bus.dead_letters("echo_iq", 10)
    assert (dead.message_id, dead.dead_letter_reason) == ("deep", "MalformedJson")
    assert dead.dead_letter_description == (
        "body is nested deeper than 64 levels (BRIDGE_MAX_JSON_DEPTH)"
    )
    assert bridge.process.poll() is None
