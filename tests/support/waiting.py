"""Wait for a condition, not for a time: the one polling loop the tests share.

A test that sleeps and then asserts guesses how long the machine takes; on a loaded CI machine
the guess is wrong one run in a hundred, and on an idle one it wastes the rest of the sleep.
:func:`wait_until` polls instead: it returns as soon as the condition holds, and fails with a
message naming what it waited for when the deadline passes. Deadlines are generous (the machine
is shared); they bound a hang, they do not measure speed.

    >>> wait_until(lambda: [1, 2], timeout=1, what="a non-empty list")
    [1, 2]
    >>> wait_until(lambda: 0, timeout=0.05, what="zero to turn true", interval=0.01)
    Traceback (most recent call last):
    ...
    TimeoutError: timed out after 0.05 s waiting for zero to turn true
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Often enough that a test ends soon after its condition holds, seldom enough to leave the CPU
# to the processes being waited for.
POLL_SECS = 0.1


def wait_until(
    check: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = POLL_SECS,
    ignore: tuple[type[Exception], ...] = (),
    abort: Callable[[], str | None] | None = None,
    details: Callable[[], str] | None = None,
) -> T:
    """Call ``check`` until it returns something true, and return that; at most ``timeout`` s.

    ``ignore``: exceptions that mean "not yet" (a server still starting refuses connections);
    any other exception from ``check`` fails at once. ``abort``: called before each try; a
    string it returns ends the wait with a RuntimeError (a process that exited will never get
    ready). ``details``: text added to either failure (a process's log tail).
    """
    deadline = time.monotonic() + timeout
    while True:
        if abort is not None and (reason := abort()) is not None:
            raise RuntimeError(_with_details(f"{reason} waiting for {what}", details))
        try:
            if result := check():
                return result
        except ignore:
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(
                _with_details(f"timed out after {timeout:g} s waiting for {what}", details)
            )
        time.sleep(interval)


def _with_details(message: str, details: Callable[[], str] | None) -> str:
    return f"{message}:\n{details()}" if details is not None else message
