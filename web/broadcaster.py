"""One reader thread feeding every dashboard viewer: the cost of a tick does not grow with viewers.

Each viewer's WebSocket thread holds a :class:`Subscription`; the broadcaster thread reads the
status once per tick, renders it to JSON once, and hands the same text to every subscription.
A viewer that falls behind gets the newest frame only (older ones are dropped, not queued), so a
slow browser costs memory for one frame.

Each tick's chart point goes to the shared :class:`web.history.ChartHistory` in Redis, and a new
viewer starts from that history. Under gunicorn the thread keeps ticking with nobody watching
(``keep_recording``, started by web/gunicorn_conf.py), so a page opened after a run shows the
last minutes; elsewhere (tests, a bare Flask app) it runs only while someone watches.

    subscription = broadcaster.subscribe()
    try:
        while (frame := subscription.next_frame(timeout=5)) is not None: ws.send(frame)
    finally:
        broadcaster.unsubscribe(subscription)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from settings import get_logger
from web.history import ChartHistory

log = get_logger(__name__)

# "About once a second": fast enough to watch quota move, slow enough to cost Redis nothing.
TICK_SECS = 1.0
# stop() waits this long for a tick in progress (a Redis round trip) to finish.
STOP_TIMEOUT_SECS = 5.0


class Subscription:
    """One viewer's frames: the history it joined with, then always the newest status frame
    (a newer one replaces one not yet taken; the history is never replaced)."""

    def __init__(self, history_frame: str) -> None:
        self._history: str | None = history_frame
        self._latest: str | None = None
        self._ready = threading.Condition()

    def offer(self, frame: str) -> None:
        with self._ready:
            self._latest = frame
            self._ready.notify()

    def next_frame(self, timeout: float) -> str | None:
        """The next frame to send; None when none came within ``timeout``."""
        with self._ready:
            if self._history is not None:
                history, self._history = self._history, None
                return history
            self._ready.wait_for(lambda: self._latest is not None, timeout)
            latest, self._latest = self._latest, None
            return latest


class StatusBroadcaster:
    """Calls ``read()`` once per tick while anyone is subscribed (or always, once
    ``keep_recording`` was called) and fans the result out.

    ``read`` returns the status as a dict; its ``point`` entry (the chart's data) is recorded in
    ``history``, which viewers who join later receive first.
    """

    def __init__(
        self,
        read: Callable[[], dict[str, Any]],
        history: ChartHistory,
        tick_s: float = TICK_SECS,
    ) -> None:
        self._read = read
        self._history = history
        self._tick_s = tick_s
        self._subscribers: set[Subscription] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._recording = False
        self._stopping = threading.Event()

    def subscribe(self) -> Subscription:
        subscription = Subscription(json.dumps({"type": "history", "points": self._past()}))
        with self._lock:
            self._subscribers.add(subscription)
            self._start_locked()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription)

    def keep_recording(self) -> None:
        """Tick even with nobody watching, so the chart's history has no gaps."""
        with self._lock:
            self._recording = True
            self._stopping.clear()
            self._start_locked()

    def stop(self) -> None:
        """End the thread (gunicorn's worker_exit, tests); viewers get no more frames."""
        with self._lock:
            self._recording = False
            self._subscribers.clear()
            self._stopping.set()
            thread = self._thread
        if thread is not None:
            thread.join(STOP_TIMEOUT_SECS)

    def _start_locked(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="dashboard-broadcaster", daemon=True
            )
            self._thread.start()

    def _past(self) -> list[dict[str, Any]]:
        try:
            return self._history.recent()
        except redis.RedisError as error:
            log.warning("dashboard history unavailable: %s", error)
            return []

    def _run(self) -> None:
        while True:
            started = time.monotonic()
            with self._lock:
                if self._stopping.is_set() or not (self._subscribers or self._recording):
                    self._thread = None  # under the lock, so a new viewer starts a new thread
                    return
                subscribers = list(self._subscribers)
            frame = self._frame()
            for subscription in subscribers:
                subscription.offer(frame)
            self._stopping.wait(max(0.0, self._tick_s - (time.monotonic() - started)))

    def _frame(self) -> str:
        try:
            status = self._read()
            if "point" in status:
                self._history.record(status["point"])
        except Exception as error:  # noqa: BLE001 - the page shows it; the thread keeps going
            log.warning("dashboard status read failed: %s", error)
            return json.dumps(
                {"type": "error", "time": time.time(), "detail": f"{type(error).__name__}: {error}"}
            )
        return json.dumps({"type": "status", **status})
