"""Turning a processor function into a Celery task that loses nothing and answers exactly once.

The task the bridge publishes is ``task(body, out_queue=..., message_id=...)``. It:

1. returns the stored result if this task id already wrote one (a redelivered message),
2. validates ``body`` against the processor's input model,
3. runs the processor inside a log context (task_id, message_id, app_id),
4. retries what is worth retrying (tasks/retrying.py): a quota refusal after the limiter's
   ``retry_after_s`` (plus jitter, never holding the worker slot), other transient errors with
   capped exponential backoff, a bounded number of times,
5. writes exactly one outcome to the outbox of ``out_queue``: the processor's result, or the
   older services' failure payload ``{id, taskId, message: "failed", error: {type, detail}}``.

A processor whose work fans out (a long recording's chunks, transcribed in parallel) returns a
Celery signature instead of a dict: the task replaces itself with that workflow followed by
:func:`write_outcome`, so no worker slot waits for the parts, and the workflow's last task must
return the outcome dict (success or failure payload), never raise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Signature, Task, shared_task
from pydantic import BaseModel, ValidationError

from settings import get_logger, log_context
from tasks.connections import redis_client
from tasks.errors import PermanentError, TransientError
from tasks.outbox import write_result, written_result
from tasks.processors.registry import Processor, register
from tasks.retrying import backoff_delay, schedule_retry

__all__ = ["backoff_delay", "failure_payload", "processor_task", "write_outcome"]

log = get_logger(__name__)


def failure_payload(body: dict[str, Any], error: BaseException) -> dict[str, Any]:
    """The older services' error result, so existing consumers of the output queue keep working."""
    return {
        "id": body.get("id"),
        "taskId": body.get("taskId"),
        "message": "failed",
        "error": {"type": type(error).__name__, "detail": str(error)},
    }


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    return f"invalid field {field!r}: {first['msg']} ({error.error_count()} error(s) in total)"


@shared_task(name="processors.write_outcome", acks_late=True, reject_on_worker_lost=True)
def write_outcome(
    outcome: dict[str, Any], out_queue: str, message_id: str, task_id: str
) -> dict[str, Any]:
    """The last step of a fanned-out processor: its outcome into the outbox, once per task id."""
    write_result(redis_client(), out_queue, task_id, message_id, outcome)
    return outcome


def run_processor(
    task: Task,
    *,
    handle: Callable[[Any], dict[str, Any] | Signature],
    input_model: type[BaseModel],
    body: dict[str, Any],
    out_queue: str,
    message_id: str,
) -> dict[str, Any]:
    task_id = task.request.id
    client = redis_client()
    already = written_result(client, out_queue, task_id)
    if already is not None:
        log.info("result for task %s was already written; not running it again", task_id)
        return already

    with log_context(task_id=task_id, message_id=message_id, app_id=body.get("app_id")):
        try:
            outcome = handle(input_model.model_validate(body))
        except TransientError as error:
            log.warning("transient failure, will retry if retries are left: %s", error)
            schedule_retry(task, error)
            log.error("giving up after %d retries: %s", task.request.retries, error)
            outcome = failure_payload(body, error)
        except ValidationError as error:
            outcome = failure_payload(body, PermanentError(_describe(error)))
        except PermanentError as error:
            log.warning("permanent failure: %s", error)
            outcome = failure_payload(body, error)
        except Exception as error:
            log.exception("processor crashed")
            outcome = failure_payload(body, error)

        if isinstance(outcome, Signature):
            raise task.replace(outcome | write_outcome.s(out_queue, message_id, task_id))
        write_result(client, out_queue, task_id, message_id, outcome)
        return outcome


def processor_task(name: str, input_model: type[BaseModel]):
    """Register ``handle(model) -> dict | Signature`` as processor ``name`` with a Celery task
    around it."""

    def decorate(handle: Callable[[Any], Any]) -> Callable[[Any], Any]:
        task_name = f"processors.{name}"

        @shared_task(name=task_name, bind=True, acks_late=True, reject_on_worker_lost=True)
        def task(self: Task, body: dict[str, Any], out_queue: str, message_id: str):
            return run_processor(
                self,
                handle=handle,
                input_model=input_model,
                body=body,
                out_queue=out_queue,
                message_id=message_id,
            )

        register(Processor(name=name, input_model=input_model, task_name=task_name))
        handle.task = task
        return handle

    return decorate
