"""Turning a processor function into a Celery task that loses nothing and answers exactly once.

The task the bridge publishes is ``task(body, out_queue=..., message_id=...)``, a
:class:`tasks.task_base.ConduitTask` (the retry and idempotency policy every task shares). It:

1. returns the stored outcome if this task id already wrote one (a redelivered message),
2. validates ``body`` against the processor's input model,
3. runs the processor inside a log context (task_id, message_id, app_id),
4. retries what is worth retrying (tasks/retrying.py): a quota refusal after the limiter's
   ``retry_after_s`` (plus jitter, never holding the worker slot), other transient errors with
   capped exponential backoff, a bounded number of times,
5. writes exactly one outcome to the outbox of ``out_queue``: the processor's result, or the
   older services' failure payload ``{id, taskId, message: "failed", error: {type, detail}}``.

A failure payload written, the task then raises :class:`ProcessorFailed`, so Celery records
FAILURE and Flower and ``celery inspect`` show the message failed; the outbox (what the bridge
sends on) still holds exactly one answer, and the bridge's sweeper sees it written.

A processor whose work fans out (a long recording's chunks, transcribed in parallel) returns a
Celery signature instead of a dict: the task replaces itself with that workflow followed by
:func:`write_outcome`, so no worker slot waits for the parts, and the workflow's last task must
return the outcome dict (success or failure payload), never raise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from celery import Signature, shared_task
from pydantic import BaseModel, ValidationError

from settings import get_logger, log_context
from settings.validation import describe_invalid_fields
from tasks.connections import redis_client
from tasks.errors import PermanentError, TransientError
from tasks.outbox import write_result, written_result
from tasks.processors.registry import Processor, register
from tasks.retrying import backoff_delay
from tasks.task_base import ConduitTask

__all__ = [
    "ProcessorFailed",
    "backoff_delay",
    "failure_payload",
    "processor_task",
    "write_outcome",
]

log = get_logger(__name__)

Handle = TypeVar("Handle", bound=Callable[..., Any])


class ProcessorFailed(PermanentError):
    """The message failed and its failure payload is in the outbox; raised so that Celery
    records the task as FAILURE. The text is the payload's ``type: detail``."""


def failure_payload(body: dict[str, Any], error: BaseException) -> dict[str, Any]:
    """The older services' error result, so existing consumers of the output queue keep working."""
    return {
        "id": body.get("id"),
        "taskId": body.get("taskId"),
        "message": "failed",
        "error": {"type": type(error).__name__, "detail": str(error)},
    }


def _fail_if_failure(outcome: dict[str, Any]) -> dict[str, Any]:
    """``outcome`` unchanged when it is a success; ProcessorFailed when it is a failure payload."""
    if outcome.get("message") == "failed":
        error = outcome.get("error") or {}
        raise ProcessorFailed(f"{error.get('type')}: {error.get('detail')}")
    return outcome


class Outbox:
    """A processor's outcomes: the outbox of one output queue (see tasks/task_base.py)."""

    def __init__(self, out_queue: str, message_id: str) -> None:
        self.out_queue, self.message_id = out_queue, message_id

    def get(self, task_id: str) -> tuple[bool, Any]:
        outcome = written_result(redis_client(), self.out_queue, task_id)
        return (outcome is not None, outcome)

    def put(self, task_id: str, outcome: Any) -> None:
        write_result(redis_client(), self.out_queue, task_id, self.message_id, outcome)


@shared_task(name="processors.write_outcome", base=ConduitTask, bind=True)
def write_outcome(
    self: ConduitTask, outcome: dict[str, Any], out_queue: str, message_id: str, task_id: str
) -> dict[str, Any]:
    """The last step of a fanned-out processor: its outcome into the outbox, once per task id;
    a failure payload fails this task too, so the workflow's state says what happened."""
    Outbox(out_queue, message_id).put(task_id, outcome)
    return _fail_if_failure(outcome)


def run_processor(
    task: ConduitTask,
    *,
    handle: Callable[[Any], dict[str, Any] | Signature],
    input_model: type[BaseModel],
    body: dict[str, Any],
    out_queue: str,
    message_id: str,
) -> dict[str, Any]:
    task_id = task.request.id
    outbox = Outbox(out_queue, message_id)
    done, already = task.previous_outcome(outbox)
    if done:
        log.info("result for task %s was already written; not running it again", task_id)
        return _fail_if_failure(already)

    with log_context(task_id=task_id, message_id=message_id, app_id=body.get("app_id")):
        try:
            outcome = handle(input_model.model_validate(body))
        except TransientError as error:
            task.retry_transient(error)  # raises Retry while retries of its kind are left
            outcome = failure_payload(body, error)
        except ValidationError as error:
            outcome = failure_payload(
                body, PermanentError(f"invalid {describe_invalid_fields(error)}")
            )
        except PermanentError as error:
            log.warning("permanent failure: %s", error)
            outcome = failure_payload(body, error)
        except Exception as error:
            log.exception("processor crashed")
            outcome = failure_payload(body, error)

        if isinstance(outcome, Signature):
            raise task.replace(outcome | write_outcome.s(out_queue, message_id, task_id))
        outbox.put(task_id, outcome)
        return _fail_if_failure(outcome)


def processor_task(name: str, input_model: type[BaseModel]) -> Callable[[Handle], Handle]:
    """Register ``handle(model) -> dict | Signature`` as processor ``name`` with a Celery task
    around it."""

    def decorate(handle: Handle) -> Handle:
        task_name = f"processors.{name}"

        @shared_task(name=task_name, base=ConduitTask, bind=True)
        def task(
            self: ConduitTask, body: dict[str, Any], out_queue: str, message_id: str
        ) -> dict[str, Any]:
            return run_processor(
                self,
                handle=handle,
                input_model=input_model,
                body=body,
                out_queue=out_queue,
                message_id=message_id,
            )

        register(Processor(name=name, input_model=input_model, task_name=task_name))
        handle.task = task  # type: ignore[attr-defined]  # the Celery task, for callers and tests
        return handle

    return decorate
