"""The thread pool behind the older asyncio methods: Conduit's calls block, the older API awaits.

One pool per process, ``COMPAT_THREADS`` threads, made on first use (so a forked process makes its
own). ``await run_blocking(send_prompt, ...)`` runs the call there and never blocks the event loop;
every quota, retry and error rule is the blocking call's own.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from settings import get_settings

T = TypeVar("T")

_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}  # pid → its pool: a fork's child gets a new one


def pool() -> ThreadPoolExecutor:
    """This process's pool for blocking Conduit calls."""
    with _lock:
        pid = os.getpid()
        if pid not in _pools:
            _pools.clear()
            _pools[pid] = ThreadPoolExecutor(
                max_workers=get_settings().compat_threads, thread_name_prefix="compat"
            )
        return _pools[pid]


async def run_blocking(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``func(*args, **kwargs)`` in the pool, awaited."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(pool(), functools.partial(func, *args, **kwargs))


def shutdown_pool() -> None:
    """Wait for and end the pool's threads (tests; a process's pool otherwise lives until exit)."""
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
    for executor in pools:
        executor.shutdown(wait=True)
