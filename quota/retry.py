"""Run a call again after quota refused it, waiting as long as quota says (not a blind minute).

    result = with_token_limit_retry(call_azure, token_client, 3, prompt)              # blocking
    result = await with_token_limit_retry(call_azure_async, token_client, 3, prompt)  # asyncio

    @with_token_limit_retry_decorator(token_client, max_retries=3, max_wait_s=5)
    async def summarise(text): ...

A quota refusal is a :class:`QuotaExceeded` (or any error with a ``retry_after_s``), or an error
whose message starts with the older counter's wording; the wait is ``retry_after_s``, or for the
older wording the token client's ``reset_time_seconds``, plus a little jitter so workers refused
together do not return together. A refusal that can never fit, or whose wait exceeds
``max_wait_s``, is raised at once (a Celery task would rather retry later than hold its slot).
Anything else is raised untouched.
"""

from __future__ import annotations

import functools
import inspect
import random
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, Retrying, stop_after_attempt, stop_any
from tenacity.stop import stop_base

from quota.errors import QuotaExceeded

F = TypeVar("F", bound=Callable[..., Any])

# The older counter's refusal wording, which existing code raises and matches on.
REFUSAL_PREFIXES = (
    "Token limit would be exceeded",
    "API Rate limit would be exceeded",
    "Whisper rate limit exceeded",
)
# Jitter: up to a tenth of the wait plus 50 ms, enough to spread workers refused in one bucket.
JITTER_FRACTION = 0.1
JITTER_FLOOR_S = 0.05


def is_quota_refusal(error: BaseException) -> bool:
    """True for a refusal that may fit later (not one that never will)."""
    if isinstance(error, QuotaExceeded) or hasattr(error, "retry_after_s"):
        return error.retry_after_s is not None
    return str(error).startswith(REFUSAL_PREFIXES)


def _status_method(token_client: Any, error: BaseException) -> Callable[[], Any]:
    """Which pool's status tells when an older-style refusal clears."""
    if str(error).startswith("Whisper"):
        return token_client.get_whisper_status
    return token_client.get_status


def _jittered(wait_s: float) -> float:
    return wait_s + random.uniform(0, JITTER_FRACTION * wait_s + JITTER_FLOOR_S)


def _error(retry_state: RetryCallState) -> BaseException | None:
    """The error the attempt ended in; None when it succeeded."""
    outcome = retry_state.outcome
    return outcome.exception() if outcome is not None else None


def _refusal(retry_state: RetryCallState) -> bool:
    error = _error(retry_state)
    return error is not None and is_quota_refusal(error)


def _refusal_of(retry_state: RetryCallState) -> BaseException:
    """The refusal a wait is computed for (tenacity waits only after a refused attempt)."""
    error = _error(retry_state)
    if error is None:
        raise RuntimeError("tenacity asked how long to wait after an attempt that succeeded")
    return error


def with_token_limit_retry_decorator(
    token_client: Any, max_retries: int = 3, max_wait_s: float | None = None
) -> Callable[[F], F]:
    """Retry the decorated function (sync or async) up to ``max_retries`` times on refusal."""

    class TooLong(stop_base):
        """Stop when the next wait would exceed ``max_wait_s``."""

        def __call__(self, retry_state: RetryCallState) -> bool:
            return max_wait_s is not None and retry_state.upcoming_sleep > max_wait_s

    stop = stop_any(stop_after_attempt(max_retries + 1), TooLong())

    # The older wording carries no wait: ask the token client when its pool frees up.
    def wait(retry_state: RetryCallState) -> float:
        error = _refusal_of(retry_state)
        known = getattr(error, "retry_after_s", None)
        if known is None:
            known = _status_method(token_client, error)()["reset_time_seconds"]
        return _jittered(known)

    async def async_wait(retry_state: RetryCallState) -> float:
        error = _refusal_of(retry_state)
        known = getattr(error, "retry_after_s", None)
        if known is None:
            known = (await _status_method(token_client, error)())["reset_time_seconds"]
        return _jittered(known)

    def decorate(func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                retrying = AsyncRetrying(
                    retry=_refusal,
                    # tenacity awaits an async wait; its stubs only know sync ones.
                    wait=async_wait,  # type: ignore[arg-type]
                    stop=stop,
                    reraise=True,
                )
                return await retrying(func, *args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            retrying = Retrying(retry=_refusal, wait=wait, stop=stop, reraise=True)
            return retrying(func, *args, **kwargs)

        return run  # type: ignore[return-value]

    return decorate


def with_token_limit_retry(
    func: Callable[..., Any], token_client: Any, max_retries: int = 3, *args: Any, **kwargs: Any
) -> Any:
    """Call ``func(*args, **kwargs)`` retrying quota refusals; await the result if func is async."""
    return with_token_limit_retry_decorator(token_client, max_retries)(func)(*args, **kwargs)
