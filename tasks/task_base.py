"""The one Celery Task base of Conduit's work: every AI task and every processor task is one.

What it holds, once for all of them:

* delivery: ``acks_late`` and ``reject_on_worker_lost`` (a message is taken off the broker only
  after its task finished, and a task whose worker died runs again), so each task must be
  idempotent by task id;
* idempotency: :meth:`ConduitTask.previous_outcome` looks the task id up in an
  :class:`OutcomeStore` (the AI tasks' own result keys, or a processor's outbox) before any work
  is done, so a task sent again never calls Azure again;
* retries: :meth:`ConduitTask.retry_transient` turns a :class:`TransientError` into Celery's
  Retry by tasks/retrying.py's policy, counting quota waits and upstream failures apart, and
  logs every retry with its reason; when the retries of that kind are spent it returns and the
  caller fails the task;
* failure: our own errors (a :class:`PermanentError`, or a transient one whose retries are
  spent, already logged with its reason) are expected outcomes (``throws``): Celery records
  FAILURE and logs one line without a traceback.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, cast

from celery import Task

from settings import get_logger, get_settings
from tasks.connections import redis_client
from tasks.errors import ConduitError, TransientError
from tasks.retrying import MAX_QUOTA_RETRIES, MAX_TRANSIENT_RETRIES, describe_cause, plan_retry

log = get_logger(__name__)

RESULT_KEY_PREFIX = "conduit:task-result"
TRANSIENT_COUNT_PREFIX = "conduit:transient-retries"
# The transient count outlives every retry of its task: the longest wait is the quota's, about
# an hour of refusals (MAX_QUOTA_RETRIES of at most a window each); a day is far beyond it.
TRANSIENT_COUNT_TTL_SECS = 24 * 3600


class OutcomeStore(Protocol):
    """Where a task id's outcome is kept, so running the same task id again returns it."""

    def get(self, task_id: str) -> tuple[bool, Any]: ...

    def put(self, task_id: str, outcome: Any) -> None: ...


class StoredResults:
    """The AI tasks' outcomes, one Redis key per task id, kept as long as Celery keeps results.

    Celery's own result cannot serve: a started task overwrites its SUCCESS state with STARTED
    before our code runs."""

    def get(self, task_id: str) -> tuple[bool, Any]:
        stored = cast(str | None, redis_client().get(f"{RESULT_KEY_PREFIX}:{task_id}"))
        return (False, None) if stored is None else (True, json.loads(stored))

    def put(self, task_id: str, outcome: Any) -> None:
        redis_client().set(
            f"{RESULT_KEY_PREFIX}:{task_id}",
            json.dumps(outcome),
            ex=get_settings().result_expires_s,
        )


class RetryCounts:
    """Upstream (transient) retries per task id; quota waits are Celery's count minus these."""

    def _key(self, task_id: str) -> str:
        return f"{TRANSIENT_COUNT_PREFIX}:{task_id}"

    def transient(self, task_id: str) -> int:
        value = cast(str | None, redis_client().get(self._key(task_id)))
        return int(value) if value is not None else 0

    def add_transient(self, task_id: str) -> None:
        pipe = redis_client().pipeline(transaction=True)
        pipe.incr(self._key(task_id))
        pipe.expire(self._key(task_id), TRANSIENT_COUNT_TTL_SECS)
        pipe.execute()

    def forget(self, task_id: str) -> None:
        redis_client().delete(self._key(task_id))


RETRY_COUNTS = RetryCounts()


class ConduitTask(Task):
    """Base of every task in tasks/ (``shared_task(base=ConduitTask, bind=True, ...)``)."""

    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    # Expected failures: Celery records FAILURE and logs them at INFO, without a traceback.
    throws = (ConduitError,)
    # Celery's own cap is a backstop only; retry_transient applies the real one per kind.
    max_retries = MAX_QUOTA_RETRIES + MAX_TRANSIENT_RETRIES

    def previous_outcome(self, store: OutcomeStore) -> tuple[bool, Any]:
        """(True, outcome) when this task id already has one in ``store``."""
        return store.get(self.request.id)

    def retry_transient(self, error: TransientError) -> None:
        """Raise Celery's Retry for ``error``; return (after logging it) when the retries of its
        kind are spent, so the caller fails the task."""
        task_id = self.request.id
        transient = RETRY_COUNTS.transient(task_id)
        plan = plan_retry(error, total_retries=self.request.retries, transient_retries=transient)
        if plan is None:
            log.error(
                "giving up after %d upstream failure(s) and %d quota wait(s): %s (%s)",
                transient,
                self.request.retries - transient,
                error,
                describe_cause(error),
            )
            RETRY_COUNTS.forget(task_id)
            return
        if plan.kind == "transient":
            RETRY_COUNTS.add_transient(task_id)
        log.warning(
            "%s retry %d of %d in %.1f s: %s (%s%s)",
            plan.kind,
            plan.number,
            plan.limit,
            plan.countdown_s,
            error,
            describe_cause(error),
            f", retry_after={error.retry_after_s:.1f} s" if error.retry_after_s is not None else "",
        )
        raise self.retry(countdown=plan.countdown_s, exc=error)

    def after_return(self, status: str, *args: Any, **kwargs: Any) -> None:
        # Finished one way or the other (not a retry): its transient count has served. A task
        # that never retried has none, so the common case costs no round trip.
        if status in ("SUCCESS", "FAILURE") and self.request.retries:
            RETRY_COUNTS.forget(self.request.id)
