"""Quota's answers read by a test that knows which kind it expects.

A :class:`~quota.Decision` types its request id, retry time and reason optional, because a
refusal has no request id, a grant no reason, and a request that can never fit no retry time;
a refusal raised (``QuotaExceeded``, ``QuotaExhausted``) carries the same optional retry time.
A test knows which case it is in; these helpers say so once (failing, naming the answer, where
the test's expectation is wrong) instead of a ``None`` check before every use.

    >>> from quota import Decision
    >>> granted(Decision(True, "completion/gpt-4o/t1:r1", 0.0, None))
    'completion/gpt-4o/t1:r1'
    >>> refused = Decision(False, None, 1.5, "Token limit would be exceeded")
    >>> retry_after(refused), reason(refused)
    (1.5, 'Token limit would be exceeded')
"""

from __future__ import annotations

from typing import Protocol

from quota import Decision


class Refusal(Protocol):
    """A decision or a raised refusal: both say when the call would fit, if ever."""

    @property
    def retry_after_s(self) -> float | None: ...


def granted(decision: Decision) -> str:
    """The request id of a decision the test expects allowed."""
    assert decision.allowed and decision.request_id is not None, f"not granted: {decision}"
    return decision.request_id


def retry_after(refusal: Refusal) -> float:
    """The retry time of a refusal the test expects to fit later."""
    assert refusal.retry_after_s is not None, f"no retry time: {refusal!r}"
    return refusal.retry_after_s


def reason(decision: Decision) -> str:
    """The reason of a decision the test expects refused."""
    assert decision.reason is not None, f"no reason: {decision}"
    return decision.reason
