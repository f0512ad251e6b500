"""The errors of Conduit's AI work, and what a task does with each.

    ConduitError
    ├── PermanentError        fail now: retrying cannot help (bad input, 400, content filter)
    │   └── InvalidInput      the message or argument is wrong; the text names the field
    └── TransientError        retry with backoff, a bounded number of times (429, 5xx, timeouts)
        └── QuotaExhausted    our own limiter said no: retry after ``retry_after_s``, no backoff

Third-party errors (openai, httpx, redis, azure) are mapped onto this tree at the one place that
calls them, so task code only ever decides between these three outcomes.
"""

from __future__ import annotations


class ConduitError(Exception):
    """Base of every error Conduit raises on purpose."""


class PermanentError(ConduitError):
    """Retrying will not help; the task fails and its failure is reported."""


class InvalidInput(PermanentError):
    """The input is wrong; the message names the field at fault."""


class TransientError(ConduitError):
    """Worth retrying later; ``retry_after_s`` is a hint when the upstream gave one."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QuotaExhausted(TransientError):
    """The shared quota has no room now; it will have room after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s)
