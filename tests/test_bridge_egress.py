"""The egress on the local bus and a real Redis: a result too large for one message is replaced
by its task's failure payload instead of blocking the results behind it."""

from __future__ import annotations

import json

import pytest

from bridge.egress import GROUP, Egress
from bridge.local_bus import LocalBus
from bridge.metrics import Counters
from tasks.outbox import stream_key, write_result

LIMIT = 4096
OVERSIZED = {"id": "big", "taskId": "t-big", "message": "SUCCESS", "transcript": "x" * 5000}
SMALL = {"id": "small", "taskId": "t-small", "message": "SUCCESS", "transcript": "hello"}


def egress_for(redis_client, bus, max_message_bytes: int) -> Egress:
    egress = Egress(
        redis_client,
        bus,
        ["out"],
        "bridge-1",
        Counters(),
        batch_size=10,
        reclaim_idle_s=60,
        max_message_bytes=max_message_bytes,
    )
    egress.ensure_groups()
    write_result(redis_client, "out", "task-big", "m-big", OVERSIZED)
    write_result(redis_client, "out", "task-small", "m-small", SMALL)
    return egress


def assert_all_acknowledged(redis_client) -> None:
    assert redis_client.xlen(stream_key("out")) == 0
    assert redis_client.xpending(stream_key("out"), GROUP)["pending"] == 0


@pytest.fixture
def bus(redis_client):
    return LocalBus(redis_client, max_message_bytes=LIMIT)


def test_an_oversized_result_is_sent_as_its_failure_payload(redis_client, bus):
    egress = egress_for(redis_client, bus, max_message_bytes=LIMIT)

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
    assert_all_acknowledged(redis_client)
    assert egress.counters.take() == {("out", "sent"): 2, ("out", "too_large"): 1}


def test_a_result_the_bus_refuses_is_replaced_on_the_next_pass(redis_client, bus):
    # Our limit is above the bus's: the bus, not the egress, finds the result too large.
    egress = egress_for(redis_client, bus, max_message_bytes=2 * LIMIT)

    assert egress.run_once() == 0  # refused: nothing sent, nothing acknowledged
    assert bus.peek("out", 10) == []
    assert egress.run_once() == 2

    failed, small = bus.peek("out", 10)
    error = json.loads(failed.body)["error"]
    assert error["type"] == "ResultTooLarge"
    assert "bytes over the local bus's limit of 4096 bytes" in error["detail"]
    assert json.loads(small.body) == SMALL
    assert_all_acknowledged(redis_client)
    assert egress.refused == {}
