"""Turning a processor function into a Celery task that loses nothing and answers exactly once.

The task the bridge publishes is ``task(body, out_queue=..., message_id=...)``. It:

1. returns the stored result if this task id already wrote one (a redelivered message),
2. validates ``body`` against the processor's input model,
3. runs the processor inside a log context (task_id, message_id, app_id),
4. retries what is worth retrying: a quota refusal after the limiter's ``retry_after_s`` (plus
   jitter, never holding the worker slot), other transient errors with capped exponential
   backoff, at most ``MAX_TRANSIENT_RETRIES`` times,
5. writes exactly one outcome to the outbox of ``out_queue``: the processor's result, or the
   older services' failure payload ``{id, taskId, message: "failed", error: {type, detail}}``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from celery import Task, shared_task
from pydantic import BaseModel, ValidationError

from settings import get_logger, log_context
from tasks.connections import redis_client
from tasks.errors import PermanentError, QuotaExhausted, TransientError
from tasks.outbox import write_result, written_result
from tasks.processors.registry import Processor, register

log = get_logger(__name__)

MAX_TRANSIENT_RETRIES = 6
BACKOFF_BASE_SECS = 2.0
BACKOFF_CAP_SECS = 120.0
# A quota refusal is not a fault: retry it for as long as an hour's worth of refusals takes.
MAX_QUOTA_RETRIES = 720
# Spread retries so workers refused together do not all come back in the same instant.
JITTER_SECS = 1.0


def backoff_delay(retries: int, hint_s: float | None = None) -> float:
    """Seconds to wait before retry number ``retries + 1``: the upstream's hint if it gave one,
    else capped exponential backoff; full jitter on top either way."""
    base = hint_s if hint_s is not None else min(BACKOFF_CAP_SECS, BACKOFF_BASE_SECS * 2**retries)
    return base + random.uniform(0, JITTER_SECS)


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


def run_processor(
    task: Task,
    *,
    handle: Callable[[Any], dict[str, Any]],
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
        except QuotaExhausted as refused:
            if task.request.retries >= MAX_QUOTA_RETRIES:
                outcome = failure_payload(body, refused)
            else:
                raise task.retry(countdown=backoff_delay(0, refused.retry_after_s),
                                 max_retries=MAX_QUOTA_RETRIES) from refused
        except TransientError as error:
            if task.request.retries >= MAX_TRANSIENT_RETRIES:
                log.error("giving up after %d retries: %s", task.request.retries, error)
                outcome = failure_payload(body, error)
            else:
                log.warning("transient failure, will retry: %s", error)
                raise task.retry(countdown=backoff_delay(task.request.retries,
                                                         error.retry_after_s),
                                 max_retries=MAX_QUOTA_RETRIES) from error
        except ValidationError as error:
            outcome = failure_payload(body, PermanentError(_describe(error)))
        except PermanentError as error:
            log.warning("permanent failure: %s", error)
            outcome = failure_payload(body, error)
        except Exception as error:
            log.exception("processor crashed")
            outcome = failure_payload(body, error)

        write_result(client, out_queue, task_id, message_id, outcome)
        return outcome


def processor_task(name: str, input_model: type[BaseModel]):
    """Register ``handle(model) -> dict`` as processor ``name`` with a Celery task around it."""

    def decorate(handle: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
        task_name = f"processors.{name}"

        @shared_task(name=task_name, bind=True, acks_late=True, reject_on_worker_lost=True)
        def task(self: Task, body: dict[str, Any], out_queue: str, message_id: str):
            return run_processor(self, handle=handle, input_model=input_model, body=body,
                                 out_queue=out_queue, message_id=message_id)

        register(Processor(name=name, input_model=input_model, task_name=task_name))
        handle.task = task
        return handle

    return decorate
