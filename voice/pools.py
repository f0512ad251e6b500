"""Warm engines shared by the calls of one process: one generic :class:`ResourcePool`.

Making a recogniser or synthesiser costs hundreds of milliseconds (models load, connections
open), which a caller would hear as silence. So a pool makes ``size`` of them at start
(:meth:`ResourcePool.warm_up`), lends one per call (:meth:`acquire`, waiting up to a timeout when
all are lent, then raising :class:`PoolExhausted` with the setting to raise), and takes it back
(:meth:`release`). A session gets the same resource back when it is free (*affinity*), so a
caller whose socket reconnects keeps its warmed recogniser.

``STTResourcePool``, ``TTSResourcePool`` and ``AOAIResourcePool`` are the older names: the same
pool, named after the setting that sizes it.

    with stt_pool.lease(session_id) as recognizer:
        ...
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from settings import Settings, get_logger
from voice.engines.base import Engines, engines_from_settings

log = get_logger(__name__)

T = TypeVar("T")
# Sessions whose affinity is remembered; the oldest are forgotten first.
MAX_AFFINITY_SESSIONS = 10000


class PoolExhausted(RuntimeError):
    """Every resource stayed lent for the whole timeout; the message names the setting."""


@dataclass
class PoolStats:
    name: str
    size: int
    in_use: int
    available: int
    acquired: int
    waits: int
    wait_s_total: float
    exhausted: int
    affinity_hits: int


class ResourcePool(Generic[T]):
    """A fixed set of ``size`` resources made by ``factory``, lent one at a time."""

    def __init__(
        self,
        name: str,
        factory: Callable[[], T],
        *,
        size: int,
        acquire_timeout_s: float,
        size_setting: str = "the pool size",
        reset: Callable[[T], None] | None = None,
        close: Callable[[T], None] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"{size_setting} must be at least 1")
        self.name, self._factory, self.size = name, factory, size
        self._timeout_s, self._size_setting = acquire_timeout_s, size_setting
        self._reset, self._close = reset, close
        self._free: list[T] = []
        self._lent: dict[int, T] = {}
        self._made = 0
        self._affinity: OrderedDict[str, int] = OrderedDict()
        self._available = threading.Condition()
        self._acquired = self._waits = self._exhausted = self._affinity_hits = 0
        self._wait_s_total = 0.0
        self._closed = False

    def warm_up(self) -> None:
        """Make every resource now, so no caller waits for one to be built."""
        while True:
            with self._available:
                if self._made >= self.size:
                    return
                self._made += 1
            resource = self._make()
            with self._available:
                self._free.append(resource)
                self._available.notify()

    def acquire(self, session_id: str | None = None, timeout: float | None = None) -> T:
        timeout = self._timeout_s if timeout is None else timeout
        started = time.monotonic()
        deadline = started + timeout
        waited = False
        resource: T | None
        with self._available:
            while True:
                if self._closed:
                    raise PoolExhausted(f"{self.name} pool is closed")
                if self._free:
                    resource = self._take(session_id)
                    break
                if self._made < self.size:
                    self._made += 1
                    resource = None
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._exhausted += 1
                    raise PoolExhausted(
                        f"{self.name} pool exhausted: all {self.size} in use for {timeout:g} s; "
                        f"raise {self._size_setting} or take fewer calls per process"
                    )
                waited = True
                self._available.wait(remaining)
            self._acquired += 1
            if waited:
                self._waits += 1
                self._wait_s_total += time.monotonic() - started
        if resource is None:
            # Made outside the lock: a slow factory must not stop other calls taking free ones.
            try:
                resource = self._make()
            except BaseException:
                with self._available:
                    self._made -= 1
                    self._available.notify()
                raise
        with self._available:
            self._lent[id(resource)] = resource
            if session_id is not None:
                self._remember(session_id, resource)
        return resource

    def release(self, resource: T, session_id: str | None = None) -> None:
        with self._available:
            if self._lent.pop(id(resource), None) is None:
                raise ValueError(f"{self.name} pool did not lend this resource")
        try:
            if self._reset is not None:
                self._reset(resource)
        except Exception as error:  # noqa: BLE001 - a broken resource is replaced, not reused
            log.warning(
                "%s pool: a returned resource failed its reset (%s); replacing it", self.name, error
            )
            self._dispose(resource)
            with self._available:
                self._made -= 1
                self._available.notify()
            return
        with self._available:
            if self._closed:
                self._dispose(resource)
                return
            self._free.append(resource)
            if session_id is not None:
                self._remember(session_id, resource)
            self._available.notify()

    @contextmanager
    def lease(self, session_id: str | None = None, timeout: float | None = None) -> Iterator[T]:
        resource = self.acquire(session_id, timeout)
        try:
            yield resource
        finally:
            self.release(resource, session_id)

    def stats(self) -> PoolStats:
        with self._available:
            return PoolStats(
                name=self.name,
                size=self.size,
                in_use=len(self._lent),
                available=len(self._free),
                acquired=self._acquired,
                waits=self._waits,
                wait_s_total=round(self._wait_s_total, 3),
                exhausted=self._exhausted,
                affinity_hits=self._affinity_hits,
            )

    def close(self) -> None:
        """Dispose of the free resources now and of lent ones as they come back."""
        with self._available:
            self._closed = True
            free, self._free = self._free, []
            self._available.notify_all()
        for resource in free:
            self._dispose(resource)

    # --- internals -------------------------------------------------------------------------------
    def _take(self, session_id: str | None) -> T:
        """Under the lock: the session's previous resource when free, else the oldest free."""
        if session_id is not None and session_id in self._affinity:
            wanted = self._affinity[session_id]
            for index, resource in enumerate(self._free):
                if id(resource) == wanted:
                    self._affinity_hits += 1
                    return self._free.pop(index)
        return self._free.pop(0)

    def _remember(self, session_id: str, resource: T) -> None:
        self._affinity[session_id] = id(resource)
        self._affinity.move_to_end(session_id)
        while len(self._affinity) > MAX_AFFINITY_SESSIONS:
            self._affinity.popitem(last=False)

    def _make(self) -> T:
        return self._factory()

    def _dispose(self, resource: T) -> None:
        if self._close is not None:
            try:
                self._close(resource)
            except Exception as error:  # noqa: BLE001 - closing is best effort
                log.warning("%s pool: closing a resource failed: %s", self.name, error)


class _NamedPool(ResourcePool[T]):
    """A pool named after what it holds and the setting that sizes it."""

    NAME = ""
    SIZE_SETTING = ""

    def __init__(
        self,
        factory: Callable[[], T],
        *,
        size: int,
        acquire_timeout_s: float,
        reset: Callable[[T], None] | None = None,
        close: Callable[[T], None] | None = None,
    ) -> None:
        super().__init__(
            self.NAME,
            factory,
            size=size,
            acquire_timeout_s=acquire_timeout_s,
            size_setting=self.SIZE_SETTING,
            reset=reset,
            close=close,
        )


class STTResourcePool(_NamedPool[T]):
    """Speech recognisers (the older name)."""

    NAME, SIZE_SETTING = "stt", "STT_POOL_SIZE"


class TTSResourcePool(_NamedPool[T]):
    """Speech synthesisers (the older name)."""

    # Not built by Conduit itself (a call's synthesiser comes in its engine set).
    NAME, SIZE_SETTING = "tts", "the pool's size"


class AOAIResourcePool(_NamedPool[T]):
    """LLM clients (the older name)."""

    # Not built by Conduit itself (one thread-safe LLM client per process serves every call).
    NAME, SIZE_SETTING = "aoai", "the pool's size"


def engine_pool(settings: Settings) -> ResourcePool[Engines]:
    """The media handlers' engine sets (recogniser, synthesiser, VAD: what one call holds), as
    ``VOICE_ENGINE`` builds them, STT_POOL_SIZE of them: the recogniser is the costly part
    (pocketsphinx loads its model for about a second; Azure opens a connection). A returned set
    is reset (no state of the previous call survives) or, when that fails, closed and replaced.
    It is an :class:`~voice.engines.base.EngineProvider`, so handlers take it as they take
    :class:`~voice.engines.base.FreshEngines`."""
    return STTResourcePool(
        lambda: engines_from_settings(settings),
        size=settings.stt_pool_size,
        acquire_timeout_s=settings.pool_acquire_timeout_s,
        reset=Engines.reset,
        close=Engines.close,
    )
