"""What quota/ raises.

    ValueError
     └── QuotaError        a call the limiter cannot accept: malformed input, an unknown, finished
         │                 or expired request_id, a pool whose window differs from ours
         └── StaleLock     a restamp of a lock whose charge left the window before its request
                           was sent: the lock is finished, acquire again
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


class StaleLock(QuotaError):
    """The request was not sent within the window (and margin) of its lock: its charge is no
    longer counted, and counting it again unweighed could over-admit. The lock is finished;
    acquire again before sending."""


class QuotaExceeded(Exception):
    """Quota refused a call; ``retry_after_s`` is when it would fit (None: it never will)."""

    def __init__(self, reason: str, retry_after_s: float | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s
