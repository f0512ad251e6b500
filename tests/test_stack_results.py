"""`make run` shows every result on its output queues, its own and anyone's (labelled); by default
it takes them, with --no-consume it only browses, so `peek` still finds a person's own result.
Against the real local bus on Redis."""

from __future__ import annotations

import json

import pytest

from bridge.bus import OutgoingMessage
from bridge.local_bus import LocalBus
from settings import Route
from stack.results import ResultReader
from stack.tally import ResultTally
from stack.workload import SampleMessage

ROUTE = Route(in_queue="form_iq", processor="feedback", out_queue="form_oq")
OURS = SampleMessage(ROUTE, "run-form-1", {"id": "run-form-1"}, "form  1 (en)")


@pytest.fixture
def bus(redis_client):
    return LocalBus(redis_client)


def send_result(bus: LocalBus, body: dict, message_id: str) -> None:
    bus.send("form_oq", [OutgoingMessage(body=json.dumps(body), message_id=message_id)])


def read_until(reader: ResultReader, count: int) -> list:
    results: list = []
    for _ in range(20):  # each read waits up to half a second for messages
        results += reader.read()
        if len(results) >= count:
            break
    return results


def success(result_id: str) -> dict:
    return {"id": result_id, "message": "SUCCESS", "sentiment": "positive", "categories": ["x"]}


def test_taking_results_prints_ours_and_anyones_labelled_and_empties_the_queue(bus) -> None:
    tally = ResultTally([OURS])
    reader = ResultReader(bus, ["form_oq"], consume=True)
    try:
        send_result(bus, success("run-form-1"), "t1")
        send_result(bus, success("my-own-42"), "t2")
        lines = [tally.record(result) for result in read_until(reader, 2)]
    finally:
        reader.close()
    assert lines[0].startswith("[ 1/1] form  1 (en): positive")
    assert lines[1] == "  » not from this run, on form_oq: id 'my-own-42' positive x"
    assert (tally.answered, tally.others, tally.complete) == (1, 1, True)
    assert bus.peek("form_oq", 10) == []


def test_browsing_shows_each_new_result_once_and_leaves_it_for_peek(bus) -> None:
    send_result(bus, success("from-before"), "t0")  # on the queue before: not shown again
    tally = ResultTally([OURS])
    reader = ResultReader(bus, ["form_oq"], consume=False)
    try:
        send_result(bus, success("my-own-42"), "t1")
        failed = {"id": "run-form-1", "message": "failed", "error": {"type": "X", "detail": "y"}}
        send_result(bus, failed, "t2")
        results = read_until(reader, 2)
        assert reader.read() == []  # browsed again: nothing new
    finally:
        reader.close()
    lines = [tally.record(result) for result in results]
    assert [r.body["id"] for r in results] == ["my-own-42", "run-form-1"]
    assert lines[1] == "[ 1/1] form  1 (en): FAILED X: y"
    assert tally.failed == {"run-form-1"}
    peeked = [json.loads(message.body)["id"] for message in bus.peek("form_oq", 10)]
    assert peeked == ["from-before", "my-own-42", "run-form-1"]


def test_a_body_that_is_not_a_json_object_is_shown_not_fatal(bus) -> None:
    reader = ResultReader(bus, ["form_oq"], consume=True)
    try:
        bus.send("form_oq", [OutgoingMessage(body="[1, 2]", message_id="t1")])
        (result,) = read_until(reader, 1)
    finally:
        reader.close()
    line = ResultTally([OURS]).record(result)
    assert "not from this run" in line and "[1, 2]" in line
