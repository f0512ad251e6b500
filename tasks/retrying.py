"""When a Celery task that failed transiently runs again, shared by every task in tasks/.

A quota refusal is not a fault: the task comes back when the limiter said there would be room
(plus jitter, so workers refused together do not return together), for as long as an hour of
refusals takes, and never waits inside its worker slot. Other transient failures (429, 5xx,
timeouts) back off exponentially, a bounded number of times.
"""

from __future__ import annotations

import random

from celery import Task

from tasks.errors import QuotaExhausted, TransientError

MAX_TRANSIENT_RETRIES = 6
BACKOFF_BASE_SECS = 2.0
BACKOFF_CAP_SECS = 120.0
MAX_QUOTA_RETRIES = 720
JITTER_SECS = 1.0


def backoff_delay(retries: int, hint_s: float | None = None) -> float:
    """Seconds to wait before retry number ``retries + 1``: the upstream's hint if it gave one,
    else capped exponential backoff; full jitter on top either way."""
    base = hint_s if hint_s is not None else min(BACKOFF_CAP_SECS, BACKOFF_BASE_SECS * 2**retries)
    return base + random.uniform(0, JITTER_SECS)


def schedule_retry(task: Task, error: TransientError) -> None:
    """Raise Celery's Retry for ``task`` after ``error``; return if its retries are spent."""
    retries = task.request.retries
    if isinstance(error, QuotaExhausted):
        if retries < MAX_QUOTA_RETRIES:
            raise task.retry(
                countdown=backoff_delay(0, error.retry_after_s), max_retries=MAX_QUOTA_RETRIES
            ) from error
    elif retries < MAX_TRANSIENT_RETRIES:
        raise task.retry(
            countdown=backoff_delay(retries, error.retry_after_s), max_retries=MAX_QUOTA_RETRIES
        ) from error
