"""The older services' retry around an awaited Conduit call: transient failures (429, 5xx,
timeouts) ``max_retries`` times with backoff, and quota refusals waited out as long as quota says.

A quota refusal is not a failure and does not use up ``max_retries``: it is a wait the limiter
timed (``retry_after_s``), repeated until ``max_wait_s`` has passed in all (so a call never waits
forever). The backoff is tasks/retrying.py's, the same as a Celery task's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tasks.errors import QuotaExhausted, TransientError
from tasks.retrying import backoff_delay

T = TypeVar("T")

# How long quota refusals may hold one call: the older counter's window twice over.
MAX_QUOTA_WAIT_SECS = 120.0


async def with_retries(
    call: Callable[[], Awaitable[T]],
    max_retries: int = 3,
    retry_delay: float | None = None,
    max_wait_s: float = MAX_QUOTA_WAIT_SECS,
) -> T:
    """``await call()``, again after a transient error (up to ``max_retries`` times: waiting the
    upstream's hint, else ``retry_delay`` doubling, else tasks/' backoff) or a quota refusal."""
    failures = 0
    deadline = time.monotonic() + max_wait_s
    while True:
        try:
            return await call()
        except QuotaExhausted as refusal:
            wait = backoff_delay(0, refusal.retry_after_s)
            if time.monotonic() + wait > deadline:
                raise
        except TransientError as error:
            if failures >= max_retries:
                raise
            hint = error.retry_after_s
            if hint is None and retry_delay is not None:
                hint = retry_delay * 2**failures
            wait = backoff_delay(failures, hint)
            failures += 1
        await asyncio.sleep(wait)
