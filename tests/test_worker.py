"""The Celery worker, for real: a `celery worker` subprocess on the embedded Redis."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_ping_round_trip_through_a_real_worker(celery_app, start_worker):
    start_worker()
    result = celery_app.send_task("worker.ping").get(timeout=30)
    assert result["pong"] is True


def test_ping_refuses_a_delay_that_would_hog_a_slot(celery_app, start_worker):
    start_worker()
    with pytest.raises(ValueError, match="delay_s must be between"):
        celery_app.send_task("worker.ping", kwargs={"delay_s": 3600}).get(timeout=30)


def test_a_pickled_message_is_refused_not_run(celery_app, start_worker):
    worker = start_worker()
    result = celery_app.send_task("worker.ping", serializer="pickle")
    worker.wait_until(lambda: "pickle" in worker.output(), 30, "the worker to refuse pickle")
    assert "Refusing to deserialize" in worker.output()
    assert result.state == "PENDING"


def test_task_killed_mid_run_is_redelivered_to_a_fresh_worker(celery_app, start_worker):
    # A short visibility timeout, so the unacked message comes back within the test.
    env = {"TASK_TIME_LIMIT_SECONDS": "4", "BROKER_VISIBILITY_TIMEOUT_SECONDS": "5"}
    first = start_worker(concurrency=1, **env)
    result = celery_app.send_task("worker.ping", kwargs={"delay_s": 3})
    first.wait_until(lambda: result.state == "STARTED", 30, "the task to start")
    first_pid = result.info.get("pid") if isinstance(result.info, dict) else None
    first.kill()

    start_worker(concurrency=1, **env)
    answer = result.get(timeout=60)
    assert answer["pong"] is True
    assert answer["pid"] != first.pid
    assert first_pid in (None, first.pid)
