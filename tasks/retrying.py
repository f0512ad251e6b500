"""When a Celery task that failed transiently runs again, shared by every task in tasks/.

A quota refusal is not a fault: the task comes back when the limiter said there would be room
(plus jitter, so workers refused together do not return together), for as long as an hour of
refusals takes, and never waits inside its worker slot. Other transient failures (429, 5xx,
timeouts) back off exponentially, a bounded number of times.

The two kinds are counted apart. Celery's ``request.retries`` counts every retry, and a chat
task on a busy deployment waits for quota about a dozen times in a calm run: compared with the
transient cap, those waits would spend it before the upstream failed once. The transient count
is kept per task id in Redis (:class:`RetryCounts`), so it survives the task being sent again.

The decision itself (:func:`plan_retry`) is plain arithmetic on the counts, apart from Celery
and Redis, so its edges are tested directly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

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


@dataclass(frozen=True)
class RetryPlan:
    """Run again after ``countdown_s``; ``kind`` and ``number`` say which count this retry is."""

    kind: str  # "quota" or "transient"
    number: int  # 1 for the first retry of this kind
    limit: int
    countdown_s: float


def plan_retry(
    error: TransientError, *, total_retries: int, transient_retries: int
) -> RetryPlan | None:
    """The retry ``error`` earns, given the retries so far; None when that kind's are spent.

    ``total_retries`` is Celery's count (every kind), ``transient_retries`` the upstream
    failures among them; quota waits are the difference.
    """
    if isinstance(error, QuotaExhausted):
        quota_retries = max(0, total_retries - transient_retries)
        if quota_retries >= MAX_QUOTA_RETRIES:
            return None
        return RetryPlan(
            "quota", quota_retries + 1, MAX_QUOTA_RETRIES, backoff_delay(0, error.retry_after_s)
        )
    if transient_retries >= MAX_TRANSIENT_RETRIES:
        return None
    return RetryPlan(
        "transient",
        transient_retries + 1,
        MAX_TRANSIENT_RETRIES,
        backoff_delay(transient_retries, error.retry_after_s),
    )


def describe_cause(error: BaseException) -> str:
    """What the log line of a retry says about its cause beyond the message: the upstream
    error's kind and HTTP status, or the URL it could not reach (never a body or a key)."""
    cause = error.__cause__
    if cause is None:
        return type(error).__name__
    parts = [type(cause).__name__]
    status = getattr(cause, "status_code", None)
    if isinstance(status, int):
        parts.append(f"status={status}")
    request = getattr(cause, "request", None)
    url = getattr(request, "url", None)
    if url is not None and status is None:
        # An unreachable upstream: which address was tried (no query: it may carry a SAS).
        parts.append(f"url={str(url).split('?', 1)[0]}")
    return " ".join(parts)
