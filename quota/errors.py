"""What quota/ raises.

    ValueError
     └── QuotaError        a call the limiter cannot accept: malformed input, an unknown, finished
                           or expired request_id, a pool whose window differs from ours
    Exception
     └── QuotaExceeded     a refusal, raised by code that chose to fail rather than wait;
                           carries retry_after_s so quota.retry knows how long to wait

A refusal itself is not an error: ``acquire`` returns ``Decision(allowed=False, ...)``. Redis
errors (connection lost, timeout) pass through unchanged, so callers retry them as they retry any
other broker outage.
"""

from __future__ import annotations


class QuotaError(ValueError):
    """The limiter refused the call itself; the message says which argument and why."""


class QuotaExceeded(Exception):
    """Quota refused a call; ``retry_after_s`` is when it would fit (None: it never will)."""

    def __init__(self, reason: str, retry_after_s: float | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s
