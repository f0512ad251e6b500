"""The ledger publishes again a task the broker lost, and only such a task; with the ledger and
outbox on the broker's Redis and on a Redis Cluster (the broker staying a plain Redis)."""

from __future__ import annotations

import json

import pytest
from celery import states

from bridge.celery_publisher import CeleryPublisher
from bridge.ledger import Ledger, LostTaskSweeper, ledger_key, republished_key
from bridge.routing import TaskRequest
from tasks.outbox import stream_key, write_result
from tests.support.cluster import on_plain_and_cluster
from tests.support.waiting import wait_until


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    on_plain_and_cluster(metafunc)  # each test on a plain Redis and on a Redis Cluster


def request(task_id: str) -> TaskRequest:
    return TaskRequest(
        task_name="processors.echo",
        queue="echo",
        task_id=task_id,
        body={"id": task_id},
        out_queue="echo_oq",
        message_id=f"m-{task_id}",
    )


@pytest.fixture
def sweeper(celery_app, state_client):
    return LostTaskSweeper(
        Ledger(state_client),
        CeleryPublisher(celery_app),
        ["echo_oq"],
        republish_after_s=0.2,
        max_republishes=2,
    )


def wait_overdue(sweeper, out_queue: str = "echo_oq") -> None:
    """Until every recorded task is overdue (the sweeper's period is 0.2 s)."""

    def all_overdue() -> bool:
        recorded = sweeper.ledger.client.zcard(ledger_key(out_queue))
        return len(sweeper.ledger.overdue(out_queue, sweeper.republish_after_s)) == recorded

    wait_until(all_overdue, 30, "the ledger's tasks to become overdue", interval=0.05)


def test_only_overdue_tasks_without_a_live_trace_are_published_again(
    sweeper, celery_app, redis_client
):
    sweeper.ledger.record([request("lost"), request("running"), request("crashed")])
    celery_app.backend.store_result("running", None, states.STARTED)
    celery_app.backend.store_result("crashed", {"exc_type": "ConnectionError"}, states.FAILURE)
    assert sweeper.sweep() == 0  # not overdue yet
    wait_overdue(sweeper)
    assert sweeper.sweep() == 2
    republished = {
        json.loads(message)["headers"]["id"] for message in redis_client.lrange("echo", 0, -1)
    }
    assert republished == {"lost", "crashed"}
    assert sweeper.sweep() == 0  # the clock started again for all three


def test_a_sent_result_forgets_its_task(sweeper, state_client):
    sweeper.ledger.record([request("done"), request("waiting")])
    pipe = state_client.pipeline(transaction=True)
    Ledger.forget(pipe, "echo_oq", ["done"])
    pipe.execute()
    assert state_client.zrange(ledger_key("echo_oq"), 0, -1) == ["waiting"]


def test_a_task_whose_outcome_is_in_the_outbox_is_dropped_not_republished(
    sweeper, celery_app, state_client
):
    # A message delivered again after its task was answered: re-recorded, then re-run against
    # the stored outcome, which writes nothing new, so only the sweeper can clear the entry.
    write_result(state_client, "echo_oq", "answered", "m-answered", {"id": "answered"})
    celery_app.backend.store_result("answered", {"id": "answered"}, states.SUCCESS)
    sweeper.ledger.record([request("answered"), request("lost")])
    wait_overdue(sweeper)
    assert sweeper.sweep() == 1  # only "lost"
    assert state_client.zrange(ledger_key("echo_oq"), 0, -1) == ["lost"]


def test_a_task_still_waiting_in_its_queue_is_not_published_again(sweeper, redis_client):
    # A backlog longer than the period: the task is late, not lost. Publishing it again each
    # period would pile copies into the queue.
    sweeper.publisher.publish([request("waiting")])
    sweeper.ledger.record([request("waiting")])
    wait_overdue(sweeper)
    assert sweeper.sweep() == 0
    assert redis_client.llen("echo") == 1


def test_a_task_that_never_writes_an_outcome_is_answered_after_the_republish_limit(
    sweeper, celery_app, redis_client, state_client
):
    # Issue 10.12: a task that fails outside its processor (its result cannot be written) is
    # FAILURE with no outcome however often it runs; it was republished forever.
    failing = request("failing")
    sweeper.ledger.record([failing])
    for republish in (1, 2):
        celery_app.backend.store_result(
            "failing", UnicodeEncodeError("utf-8", "", 0, 1, "x"), states.FAILURE
        )
        wait_overdue(sweeper)
        assert sweeper.sweep() == 1, f"republish {republish}"
        assert redis_client.lpop("echo") is not None  # a worker takes it, and fails again

    wait_overdue(sweeper)
    assert sweeper.sweep() == 0  # the limit: answered, not published again
    assert redis_client.llen("echo") == 0

    [(_, fields)] = state_client.xrange(stream_key("echo_oq"))
    assert (fields["task_id"], fields["message_id"]) == ("failing", "m-failing")
    assert json.loads(fields["body"]) == {
        "id": "failing",
        "taskId": None,
        "message": "failed",
        "error": {
            "type": "RepublishLimitExceeded",
            "detail": "the task ended with no outcome 3 times, last as FAILURE "
            "(UnicodeEncodeError); not published again after 2 (BRIDGE_MAX_REPUBLISHES)",
        },
    }
    # The next sweep finds it answered and forgets it, counts and all (as the egress would).
    wait_overdue(sweeper)
    assert sweeper.sweep() == 0
    assert state_client.zcard(ledger_key("echo_oq")) == 0
    assert state_client.hlen(republished_key("echo_oq")) == 0


def test_an_outcome_written_late_by_a_running_copy_is_not_doubled(sweeper, state_client):
    # The sweeper gave up while a republished copy still ran; the copy's outcome comes second
    # and is dropped by the outbox's write-once, so the message still has exactly one answer.
    sweeper.give_up(request("late"), RuntimeError("gave up"))
    assert write_result(state_client, "echo_oq", "late", "m-late", {"id": "late"}) is None
    assert state_client.xlen(stream_key("echo_oq")) == 1


def test_a_request_the_publisher_cannot_take_is_answered_not_retried(
    celery_app, redis_client, state_client
):
    class FailsOnOne(CeleryPublisher):
        def publish(self, requests, traces=None):
            if any(r.task_id == "poisoned" for r in requests):
                raise TypeError("not serialisable")
            super().publish(requests, traces)

    sweeper = LostTaskSweeper(
        Ledger(state_client),
        FailsOnOne(celery_app),
        ["echo_oq"],
        republish_after_s=0.2,
        max_republishes=3,
    )
    sweeper.ledger.record([request("poisoned"), request("fine")])
    wait_overdue(sweeper)
    assert sweeper.sweep() == 1  # no exception leaves the sweep (it would stop the bridge)
    assert {json.loads(m)["headers"]["id"] for m in redis_client.lrange("echo", 0, -1)} == {"fine"}
    [(_, fields)] = state_client.xrange(stream_key("echo_oq"))
    assert fields["task_id"] == "poisoned"
    assert json.loads(fields["body"])["error"] == {
        "type": "TypeError",
        "detail": "not serialisable",
    }
