"""One reader thread feeding every dashboard viewer: the cost of a tick does not grow with viewers.

Each viewer's WebSocket thread holds a :class:`Subscription`; the broadcaster thread reads the
status once per tick, renders it to JSON once, and hands the same text to every subscription.
A viewer that falls behind gets the newest frame only (older ones are dropped, not queued), so a
slow browser costs memory for one frame. The thread runs only while someone is watching.

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
from collections import deque
from collections.abc import Callable
from typing import Any

from settings import get_logger

log = get_logger(__name__)

# "About once a second": fast enough to watch quota move, slow enough to cost Redis nothing.
TICK_SECS = 1.0
# Chart history a new viewer receives: the last five minutes at one point per tick.
HISTORY_POINTS = 300


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
                frame, self._history = self._history, None
                return frame
            self._ready.wait_for(lambda: self._latest is not None, timeout)
            frame, self._latest = self._latest, None
            return frame


class StatusBroadcaster:
    """Calls ``read()`` once per tick while anyone is subscribed and fans the result out.

    ``read`` returns the status as a dict; the broadcaster keeps its ``point`` entry (the
    chart's data) as history for viewers who join later.
    """

    def __init__(self, read: Callable[[], dict[str, Any]], tick_s: float = TICK_SECS) -> None:
        self._read = read
        self._tick_s = tick_s
        self._subscribers: set[Subscription] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY_POINTS)

    def subscribe(self) -> Subscription:
        with self._lock:
            subscription = Subscription(
                json.dumps({"type": "history", "points": list(self._history)})
            )
            self._subscribers.add(subscription)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="dashboard-broadcaster", daemon=True
                )
                self._thread.start()
            return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription)

    def _run(self) -> None:
        while True:
            started = time.monotonic()
            with self._lock:
                if not self._subscribers:
                    self._thread = None  # under the lock, so a new viewer starts a new thread
                    return
                subscribers = list(self._subscribers)
            frame = self._frame()
            for subscription in subscribers:
                subscription.offer(frame)
            time.sleep(max(0.0, self._tick_s - (time.monotonic() - started)))

    def _frame(self) -> str:
        try:
            status = self._read()
        except Exception as error:  # noqa: BLE001 - the page shows it; the thread keeps going
            log.warning("dashboard status read failed: %s", error)
            return json.dumps(
                {"type": "error", "time": time.time(), "detail": f"{type(error).__name__}: {error}"}
            )
        if "point" in status:
            self._history.append(status["point"])
        return json.dumps({"type": "status", **status})
