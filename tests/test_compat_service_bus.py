"""compat.service_bus.AsyncServiceBusHandler on the local bus (a real Redis): at-least-once with
each result once across a SIGKILL, retries then dead-letter, invalid bodies, the older example."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bridge.bus import OutgoingMessage
from bridge.local_bus import LocalBus
from compat.service_bus import AsyncServiceBusHandler, result_message_id
from compat.threads import shutdown_pool
from tests.support.compat_service import processed_key
from tests.support.processes import ManagedProcess, python_args

WAIT_SECS = 120
# How long the idle-polling test leaves the queue empty.
IDLE_SECS = 3.0
# Short, so messages a killed process held come back quickly.
LOCK_SECS = 3


@pytest.fixture(autouse=True)
def compat_pool() -> Iterator[None]:
    """The compat pool's threads live as long as their process: end them with each test."""
    yield
    shutdown_pool()


@pytest.fixture
def bus(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalBus]:
    monkeypatch.setenv("LOCAL_BUS_LOCK_DURATION_SECONDS", str(LOCK_SECS))
    local = LocalBus(
        redis.Redis.from_url(redis_url, decode_responses=True),
        lock_duration_s=LOCK_SECS,
        owns_client=True,
    )
    yield local
    local.close()


def queues() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"in-{tag}", f"out-{tag}"


def send(bus: LocalBus, queue: str, bodies: list[str]) -> list[str]:
    ids = [f"m-{i}-{uuid.uuid4().hex[:6]}" for i in range(len(bodies))]
    bus.send(
        queue, [OutgoingMessage(body=b, message_id=i) for b, i in zip(bodies, ids, strict=True)]
    )
    return ids


async def run_until(handler: AsyncServiceBusHandler, done, timeout: float = WAIT_SECS) -> None:
    listening = asyncio.create_task(handler.listen())
    try:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.05)
    finally:
        await handler.stop()
        await listening


def wait_until(check, what: str, process: ManagedProcess | None = None) -> None:
    deadline = time.monotonic() + WAIT_SECS
    while time.monotonic() < deadline:
        if process is not None and process.process is not None:
            assert process.process.poll() is None, process.output()[-3000:]
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_200_messages_through_a_handler_killed_midway_give_200_results_once_each(
    bus: LocalBus, redis_client: redis.Redis, conduit_env: dict[str, str], tmp_path: Path
):
    in_queue, out_queue = queues()
    ids = send(bus, in_queue, [json.dumps({"n": n}) for n in range(200)])
    env = {**conduit_env, "LOCAL_BUS_LOCK_DURATION_SECONDS": str(LOCK_SECS)}
    args = python_args("-m", "tests.support.compat_service", in_queue, out_queue)

    def results() -> list:
        return bus.peek(out_queue, 1000)

    def sent_not_completed() -> set[str]:
        """Inputs whose result is out but which are still in the input queue: killing the
        process now makes their redelivery send the result again."""
        pending = {m.message_id for m in bus.peek(in_queue, 1000)}
        return {m.correlation_id for m in results()} & pending

    slow = [*args, "--slow-complete"]  # results go out well before their input is completed
    first = ManagedProcess(slow, env, tmp_path / "first.log", name="compat service").start()
    deadline = time.monotonic() + WAIT_SECS
    while len(results()) < 150 and time.monotonic() < deadline:  # kill midway in any case
        if len(results()) >= 20 and sent_not_completed():
            break
    first.kill()  # SIGKILL, messages in flight and locked
    first.stop()  # only closes its log: the process is gone
    assert len(results()) < 200
    caught = sent_not_completed()  # frozen now: these will be processed and sent again
    assert caught, "the kill found no result sent for a message not yet completed"

    with ManagedProcess(args, env, tmp_path / "second.log", name="compat service again"):
        wait_until(lambda: len(results()) >= 200 and not bus.peek(in_queue, 1), "every result")

    out = results()
    assert len(out) == 200
    assert sorted(m.correlation_id for m in out) == sorted(ids)
    assert {m.message_id for m in out} == {result_message_id(in_queue, i) for i in ids}
    assert sorted(json.loads(m.body)["n"] for m in out) == list(range(200))
    assert bus.dead_letters(in_queue, 10) == []
    counts = {int(n): int(c) for n, c in redis_client.hgetall(processed_key(in_queue)).items()}
    assert sorted(counts) == list(range(200))
    # Messages whose result was out when the process died were processed again, and their
    # second result was dropped by duplicate detection (one result each, above).
    by_id = dict(zip(ids, range(200), strict=True))
    assert all(counts[by_id[message_id]] >= 2 for message_id in caught)


def test_a_raising_processor_is_retried_then_dead_lettered_with_the_reason(bus: LocalBus):
    in_queue, out_queue = queues()
    (message_id,) = send(bus, in_queue, [json.dumps({"n": 1})])
    calls: list[int] = []

    async def process_data(body: dict) -> dict:
        calls.append(body["n"])
        raise ValueError("the model answered nonsense\nsecond line")

    handler = AsyncServiceBusHandler(
        process_data, in_queue, out_queue, None, 2, 0.05, 0.2, 4, bus=bus
    )
    asyncio.run(run_until(handler, lambda: bool(bus.dead_letters(in_queue, 1))))

    assert calls == [1, 1, 1]  # the first attempt and max_retries=2 retries
    (dead,) = bus.dead_letters(in_queue, 10)
    assert dead.message_id == message_id
    assert dead.dead_letter_reason == "ProcessingFailed"
    assert dead.dead_letter_description == (
        "ValueError: the model answered nonsense (after 3 attempts)"
    )
    assert bus.peek(out_queue, 10) == [] and bus.peek(in_queue, 10) == []


def test_a_body_that_is_not_json_is_dead_lettered_at_once(bus: LocalBus):
    in_queue, out_queue = queues()
    send(bus, in_queue, ["not json", json.dumps({"n": 2})])
    seen: list[dict] = []

    def process_data(body: dict) -> dict:  # a blocking processor runs in the compat pool
        seen.append(body)
        return {"ok": body["n"]}

    handler = AsyncServiceBusHandler(process_data, in_queue, out_queue, max_wait_time=0.2, bus=bus)
    asyncio.run(run_until(handler, lambda: handler.processed >= 2))

    (dead,) = bus.dead_letters(in_queue, 10)
    assert dead.dead_letter_reason == "InvalidMessageBody"
    assert seen == [{"n": 2}]
    assert [json.loads(m.body) for m in bus.peek(out_queue, 10)] == [{"ok": 2}]


def test_the_older_usage_example_with_only_the_import_changed(bus: LocalBus, caplog):
    in_queue, out_queue = "input-queue", "output-queue"
    send(bus, in_queue, [json.dumps({"text": "hello"})])

    async def process_data(body: dict) -> dict:
        return {"upper": body["text"].upper()}

    async def older_service() -> None:
        from compat.service_bus import AsyncServiceBusHandler  # was: from common.service_bus

        # Initialize handler
        handler = AsyncServiceBusHandler(
            processor_function=process_data,
            in_queue_name="input-queue",
            out_queue_name="output-queue",
            fully_qualified_namespace="namespace.servicebus.windows.net",
        )

        # Start listening for messages
        listening = asyncio.create_task(handler.listen())  # as `await handler.listen()`, stoppable
        async with asyncio.timeout(WAIT_SECS):
            while not bus.peek("output-queue", 1):
                await asyncio.sleep(0.05)
        await handler.stop()
        await listening

    asyncio.run(older_service())

    assert [json.loads(m.body) for m in bus.peek(out_queue, 10)] == [{"upper": "HELLO"}]
    assert "set SERVICE_BUS_NAMESPACE=namespace.servicebus.windows.net" in caplog.text


def test_idle_polling_slows_down_on_an_empty_queue_and_still_picks_up_a_message(
    bus: LocalBus, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("COMPAT_MAX_IDLE_SECONDS", "1")
    in_queue, out_queue = queues()
    receives: list[float] = []
    real_receiver = bus.receiver

    class CountingReceiver:
        def __init__(self, queue: str) -> None:
            self.inner = real_receiver(queue)

        def receive(self, max_count: int, max_wait_s: float):
            receives.append(max_wait_s)
            return self.inner.receive(max_count, max_wait_s)

        def __getattr__(self, name: str):
            return getattr(self.inner, name)

    monkeypatch.setattr(bus, "receiver", CountingReceiver)
    # No long poll: without the idle sleep this would spin hundreds of receives a second.
    handler = AsyncServiceBusHandler(
        lambda body: {"got": body["n"]}, in_queue, out_queue, max_wait_time=0, bus=bus
    )

    async def scenario() -> int:
        listening = asyncio.create_task(handler.listen())
        await asyncio.sleep(IDLE_SECS)  # an empty queue for this long
        idle_receives = len(receives)
        send(bus, in_queue, [json.dumps({"n": 5})])
        async with asyncio.timeout(WAIT_SECS):
            while handler.processed < 1:
                await asyncio.sleep(0.05)
        await handler.stop()
        await listening
        return idle_receives

    idle_receives = asyncio.run(scenario())

    # Sleeps of 0.25, 0.5, then 1 s (the cap) between receives: in 3 s at most 5 receives (a
    # loaded machine makes fewer); spinning without them would make hundreds.
    assert 1 <= idle_receives <= 5 and set(receives) == {0}
    assert [json.loads(m.body) for m in bus.peek(out_queue, 10)] == [{"got": 5}]


def test_with_service_bus_configured_the_namespace_argument_names_it(monkeypatch):
    from bridge.servicebus import ServiceBus

    monkeypatch.setenv("SERVICE_BUS_NAMESPACE", "configured.servicebus.windows.net")
    handler = AsyncServiceBusHandler(
        lambda body: body, "input-queue", "output-queue", "other.servicebus.windows.net"
    )
    try:
        assert isinstance(handler._bus, ServiceBus)
        assert handler._bus.client.fully_qualified_namespace == "other.servicebus.windows.net"
    finally:
        handler._bus.close()


def test_a_result_that_is_not_json_counts_as_a_processing_failure(bus: LocalBus):
    in_queue, out_queue = queues()
    send(bus, in_queue, [json.dumps({"n": 3})])

    async def process_data(body: dict) -> object:
        return {"when": object()}  # json.dumps cannot encode it

    handler = AsyncServiceBusHandler(process_data, in_queue, out_queue, None, 0, 0, 0.2, bus=bus)
    asyncio.run(run_until(handler, lambda: bool(bus.dead_letters(in_queue, 1))))

    (dead,) = bus.dead_letters(in_queue, 10)
    assert dead.dead_letter_reason == "ProcessingFailed"
    assert dead.dead_letter_description.startswith("TypeError: Object of type object")
    assert bus.peek(out_queue, 10) == []
