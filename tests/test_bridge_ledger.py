"""The ledger publishes again a task the broker lost, and only such a task."""

from __future__ import annotations

import json
import time

import pytest
from celery import states

from bridge.celery_publisher import CeleryPublisher
from bridge.ledger import Ledger, LostTaskSweeper, ledger_key
from bridge.routing import TaskRequest
from tasks.outbox import write_result


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
def sweeper(celery_app, redis_client):
    return LostTaskSweeper(
        Ledger(redis_client), CeleryPublisher(celery_app), ["echo_oq"], republish_after_s=0.2
    )


def test_only_overdue_tasks_without_a_live_trace_are_published_again(
    sweeper, celery_app, redis_client
):
    sweeper.ledger.record([request("lost"), request("running"), request("crashed")])
    celery_app.backend.store_result("running", None, states.STARTED)
    celery_app.backend.store_result("crashed", {"exc_type": "ConnectionError"}, states.FAILURE)
    assert sweeper.sweep() == 0  # not overdue yet
    time.sleep(0.3)
    assert sweeper.sweep() == 2
    republished = {
        json.loads(message)["headers"]["id"] for message in redis_client.lrange("echo", 0, -1)
    }
    assert republished == {"lost", "crashed"}
    assert sweeper.sweep() == 0  # the clock started again for all three


def test_a_sent_result_forgets_its_task(sweeper, redis_client):
    sweeper.ledger.record([request("done"), request("waiting")])
    pipe = redis_client.pipeline(transaction=True)
    Ledger.forget(pipe, "echo_oq", ["done"])
    pipe.execute()
    assert redis_client.zrange(ledger_key("echo_oq"), 0, -1) == ["waiting"]


def test_a_task_whose_outcome_is_in_the_outbox_is_dropped_not_republished(
    sweeper, celery_app, redis_client
):
    # A message delivered again after its task was answered: re-recorded, then re-run against
    # the stored outcome, which writes nothing new, so only the sweeper can clear the entry.
    write_result(redis_client, "echo_oq", "answered", "m-answered", {"id": "answered"})
    celery_app.backend.store_result("answered", {"id": "answered"}, states.SUCCESS)
    sweeper.ledger.record([request("answered"), request("lost")])
    time.sleep(0.3)
    assert sweeper.sweep() == 1  # only "lost"
    assert redis_client.zrange(ledger_key("echo_oq"), 0, -1) == ["lost"]


def test_a_task_still_waiting_in_its_queue_is_not_published_again(sweeper, redis_client):
    # A backlog longer than the period: the task is late, not lost. Publishing it again each
    # period would pile copies into the queue.
    sweeper.publisher.publish([request("waiting")])
    sweeper.ledger.record([request("waiting")])
    time.sleep(0.3)
    assert sweeper.sweep() == 0
    assert redis_client.llen("echo") == 1
