"""A worker logs ids and sizes, not message bodies (issue 10.13): Celery's own lines quote a
task's arguments, its result and any message it cannot run; the worker's filter makes them
sizes, and what is left passes the secret filter."""

from __future__ import annotations

import io
import json
import logging

import pytest

from settings import configure_logging, load_settings
from tasks.processors import get_processor, task_id_for
from worker.log_bodies import CeleryBodyFilter

BODY = "{'id': '1', 'text': 'my private feedback', 'audio_url': '...&sig=c2VjcmV0'}"


@pytest.fixture
def worker_log(monkeypatch, restore_logging) -> io.StringIO:
    """Logging as a worker sets it up (JSON lines), into a buffer."""
    monkeypatch.setenv("LOG_FORMAT", "json")
    stream = io.StringIO()
    configure_logging(load_settings(), stream=stream, extra_filters=[CeleryBodyFilter()])
    return stream


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_task_lines_carry_ids_and_sizes_not_bodies(worker_log):
    # The shapes celery.worker.strategy and celery.app.trace log, arguments and all.
    received = {"id": "t-1", "name": "processors.echo", "args": f"({BODY},)", "kwargs": "{}"}
    logging.getLogger("celery.worker.strategy").info(
        "Task %(name)s[%(id)s] received", received, extra={"data": received}
    )
    succeeded = {"id": "t-1", "name": "processors.echo", "runtime": 0.01, "return_value": BODY}
    logging.getLogger("celery.app.trace").info(
        "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s",
        succeeded,
        extra={"data": succeeded},
    )
    text = worker_log.getvalue()
    assert "my private feedback" not in text and "c2VjcmV0" not in text
    first, second = lines(worker_log)
    assert first["message"] == "Task processors.echo[t-1] received"
    assert first["data"]["args"] == f"<{len(BODY) + 3} chars>"
    assert second["message"] == f"Task processors.echo[t-1] succeeded in 0.01s: <{len(BODY)} chars>"


def test_a_message_the_consumer_cannot_run_is_logged_without_its_body(worker_log):
    from celery.worker.consumer.consumer import UNKNOWN_TASK_ERROR

    logging.getLogger("celery.worker.consumer.consumer").error(
        UNKNOWN_TASK_ERROR, "processors.nope", BODY, "{'headers': 1}", "{'queue': 'echo'}"
    )
    [line] = lines(worker_log)
    assert "Received unregistered task of type processors.nope" in line["message"]
    assert "my private feedback" not in line["message"]
    assert f"<{len(BODY)} chars>" in line["message"]


def test_other_loggers_are_left_alone(worker_log):
    logging.getLogger("conduit.test").info("%(args)s", {"args": "kept as it is"})
    assert lines(worker_log)[0]["message"] == "kept as it is"


@pytest.mark.slow
def test_a_real_worker_logs_no_message_body_or_sas_signature(celery_app, start_worker, tmp_path):
    log_dir = tmp_path / "logs"
    worker = start_worker(LOG_DIR=str(log_dir))
    processor = get_processor("echo")
    body = {
        "id": "m-1",
        "text": "a private complaint about order 77",
        "audio_url": "https://a.blob.core.windows.net/c/x.wav?sv=2024&sig=c2VjcmV0c2ln",
    }
    task_id = task_id_for("echo_iq", "m-1")
    celery_app.send_task(
        processor.task_name,
        args=[body],
        kwargs={"out_queue": "echo_oq", "message_id": "m-1"},
        task_id=task_id,
        queue=processor.queue,
    ).get(timeout=60)
    # A task no worker knows: Celery logs the whole message it discards.
    celery_app.send_task("processors.no_such_task", args=[body], queue=processor.queue)
    worker.wait_until(
        lambda: "processors.no_such_task" in worker.output(), 60, "the unknown task's line"
    )
    worker.stop()
    for text in [worker.output(), *(path.read_text() for path in log_dir.glob("*.log"))]:
        assert task_id in text
        assert "private complaint" not in text and "c2VjcmV0c2ln" not in text
