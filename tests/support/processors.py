"""Send a message to a processor task as the bridge does, and read its one outcome.

A processor's outcome is what it wrote to the outbox (what the bridge sends on), success or
failure payload; the Celery state must agree with it: SUCCESS for a success, FAILURE for a
failure payload (so Flower and ``celery inspect`` tell the truth).
"""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery

from tasks.outbox import written_result
from tasks.processors import get_processor, task_id_for


def run_message(
    app: Celery,
    client: redis.Redis,
    processor_name: str,
    body: dict[str, Any],
    *,
    in_queue: str,
    out_queue: str,
    message_id: str,
    timeout: float,
) -> dict[str, Any]:
    """The outcome the processor wrote for ``body`` (after checking the task's state agrees)."""
    processor = get_processor(processor_name)
    task_id = task_id_for(in_queue, message_id)
    result = app.send_task(
        processor.task_name,
        args=[body],
        kwargs={"out_queue": out_queue, "message_id": message_id},
        task_id=task_id,
        queue=processor.queue,
    )
    result.get(timeout=timeout, propagate=False)
    outcome = written_result(client, out_queue, task_id)
    assert outcome is not None, f"task {task_id} ended {result.state} without an outcome"
    expected = "FAILURE" if outcome.get("message") == "failed" else "SUCCESS"
    assert result.state == expected, (result.state, outcome)
    return outcome
