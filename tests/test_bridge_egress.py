"""The egress on the local bus and a real Redis: a result too large for one message is replaced
by its task's failure payload instead of blocking the results behind it."""

from __future__ import annotations

import json

import pytest

from bridge.egress import GROUP, Egress
from bridge.local_bus import LocalBus
from bridge.metrics import Counters
from tasks.outbox import stream_key, write_result
from tests.support.cluster import on_plain_and_cluster


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    on_plain_and_cluster(metafunc)  # each test on a plain Redis and on a Redis Cluster


LIMIT = 4096
OVERSIZED = {"id": "big", "taskId": "t-big", "message": "SUCCESS", "transcript": "x" * 5000}
SMALL = {"id": "small", "taskId": "t-small", "message": "SUCCESS", "transcript": "hello"}


def egress_for(state_client, bus, max_message_bytes: int) -> Egress:
    egress = Egress(
        state_client,
        bus,
        ["out"],
        "bridge-1",
        Counters(),
        batch_size=10,
        reclaim_idle_s=60,
        max_message_bytes=max_message_bytes,
    )
    egress.ensure_groups()
    write_result(state_client, "out", "task-big", "m-big", OVERSIZED)
    write_result(state_client, "out", "task-small", "m-small", SMALL)
    return egress


def assert_all_acknowledged(state_client) -> None:
    assert state_client.xlen(stream_key("out")) == 0
    assert state_client.xpending(stream_key("out"), GROUP)["pending"] == 0


@pytest.fixture
def bus(state_client):
    return LocalBus(state_client, max_message_bytes=LIMIT)


def test_an_oversized_result_is_sent_as_its_failure_payload(state_client, bus):
    egress = egress_for(state_client, bus, max_message_bytes=LIMIT)

    assert egress.run_once() == 2

    failed, small = bus.peek("out", 10)
    size = len(json.dumps(OVERSIZED))
    assert json.loads(failed.body) == {
        "id": "big",
        "taskId": "t-big",
        "message": "failed",
        "error": {
            "type": "ResultTooLarge",
            "detail": f"the result is {size} bytes, {size - LIMIT} bytes over the limit of "
            f"{LIMIT} bytes for one message (BRIDGE_MAX_MESSAGE_BYTES)",
        },
    }
    assert (failed.message_id, failed.correlation_id) == ("task-big", "m-big")
    assert json.loads(small.body) == SMALL
    assert_all_acknowledged(state_client)
    assert egress.counters.take() == {("out", "sent"): 2, ("out", "too_large"): 1}


def test_a_result_the_bus_refuses_is_replaced_on_the_next_pass(state_client, bus):
    # Our limit is above the bus's: the bus, not the egress, finds the result too large.
    egress = egress_for(state_client, bus, max_message_bytes=2 * LIMIT)

    assert egress.run_once() == 0  # refused: nothing sent, nothing acknowledged
    assert bus.peek("out", 10) == []
    assert egress.run_once() == 2

    failed, small = bus.peek("out", 10)
    error = json.loads(failed.body)["error"]
    assert error["type"] == "ResultTooLarge"
    assert "bytes over the local bus's limit of 4096 bytes" in error["detail"]
    assert json.loads(small.body) == SMALL
    assert_all_acknowledged(state_client)
    assert egress.refused == {}


def test_results_of_every_output_queue_are_sent_wherever_their_streams_live(state_client, bus):
    # On a cluster the streams of these queues sit in different slots, where one XREADGROUP
    # over all of them would fail with CROSSSLOT: the egress reads them slot by slot.
    queues = [f"out-{i}" for i in range(6)]
    egress = Egress(
        state_client,
        bus,
        queues,
        "bridge-1",
        Counters(),
        batch_size=10,
        reclaim_idle_s=60,
        max_message_bytes=LIMIT,
    )
    egress.ensure_groups()
    for queue in queues:
        write_result(state_client, queue, f"task-{queue}", f"m-{queue}", {"id": queue})

    sent = 0
    for _ in range(len(queues)):  # one pass is enough; a loaded machine may need a few
        sent += egress.run_once()
        if sent == len(queues):
            break
    assert sent == len(queues)
    for queue in queues:
        [result] = bus.peek(queue, 10)
        assert (result.message_id, json.loads(result.body)) == (f"task-{queue}", {"id": queue})
        assert state_client.xlen(stream_key(queue)) == 0
