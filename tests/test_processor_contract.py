"""The processor contract every route relies on: one outcome per task id, in the outbox."""

from __future__ import annotations

import json

import pytest

from tasks.errors import InvalidInput, QuotaExhausted, TransientError
from tasks.outbox import stream_key, write_result, written_result
from tasks.processors import get_processor, task_id_for
from tasks.processors.base import ProcessorFailed, backoff_delay, failure_payload
from tasks.processors.registry import UnknownProcessor


def test_task_ids_are_stable_per_queue_and_message():
    assert task_id_for("form_iq", "m-1") == task_id_for("form_iq", "m-1")
    assert task_id_for("form_iq", "m-1") != task_id_for("other_iq", "m-1")


def test_unknown_processor_names_the_known_ones():
    with pytest.raises(UnknownProcessor, match="echo"):
        get_processor("nope")


def test_failure_payload_keeps_the_older_shape():
    payload = failure_payload({"id": "7", "taskId": "t"}, InvalidInput("language is required"))
    assert payload == {
        "id": "7",
        "taskId": "t",
        "message": "failed",
        "error": {"type": "InvalidInput", "detail": "language is required"},
    }


def test_backoff_prefers_the_upstream_hint_and_is_capped():
    assert 5.0 <= backoff_delay(3, hint_s=5.0) <= 6.0
    assert backoff_delay(50) <= 121.0
    assert isinstance(QuotaExhausted("x", 1.0), TransientError)


def test_outbox_write_is_once_per_task_id(redis_client):
    first = write_result(redis_client, "out", "task-1", "m-1", {"n": 1})
    second = write_result(redis_client, "out", "task-1", "m-1", {"n": 2})
    assert first and second is None
    assert redis_client.xlen(stream_key("out")) == 1
    assert written_result(redis_client, "out", "task-1") == {"n": 1}


@pytest.mark.slow
def test_echo_through_a_real_worker_answers_once_even_when_sent_twice(
    celery_app, start_worker, redis_client
):
    start_worker()
    processor = get_processor("echo")
    task_id = task_id_for("echo_iq", "m-42")
    for _ in range(2):  # the same message delivered twice
        celery_app.send_task(
            processor.task_name,
            args=[{"id": "42", "x": [1, 2]}],
            kwargs={"out_queue": "echo_oq", "message_id": "m-42"},
            task_id=task_id,
            queue=processor.queue,
        ).get(timeout=30)
    entries = redis_client.xrange(stream_key("echo_oq"))
    assert len(entries) == 1
    _, fields = entries[0]
    assert fields["task_id"] == task_id and fields["message_id"] == "m-42"
    assert json.loads(fields["body"]) == {"id": "42", "x": [1, 2], "message": "SUCCESS"}


@pytest.mark.slow
def test_a_failed_message_is_a_failed_task_with_one_failure_payload(
    celery_app, start_worker, redis_client
):
    start_worker()
    processor = get_processor("echo")
    task_id = task_id_for("echo_iq", "m-bad")
    for _ in range(2):  # delivered twice: still one payload, still a failed task
        result = celery_app.send_task(
            processor.task_name,
            args=[{"taskId": "t-1"}],
            kwargs={"out_queue": "echo_oq", "message_id": "m-bad"},
            task_id=task_id,
            queue=processor.queue,
        )
        with pytest.raises(ProcessorFailed, match="PermanentError: invalid field 'id'"):
            result.get(timeout=30)
        # What Flower and `celery inspect` read: the result backend's state.
        assert result.state == "FAILURE"
    entries = redis_client.xrange(stream_key("echo_oq"))
    assert len(entries) == 1
    outcome = json.loads(entries[0][1]["body"])
    assert outcome["message"] == "failed" and outcome["taskId"] == "t-1"
    assert outcome["error"]["type"] == "PermanentError"
    assert "'id'" in outcome["error"]["detail"]
