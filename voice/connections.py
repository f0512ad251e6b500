"""Live updates to every socket that wants them, on any replica: :class:`ConnectionManager`.

A socket (a dashboard, a call page, a media socket) registers with its client type, call id,
session id and topics, and its own thread drains :meth:`Connection.next_message`. Anything may
``broadcast_topic("calls", ...)`` or ``broadcast_session(session_id, ...)``.

With Redis, a broadcast is PUBLISHed on one channel and every replica's listener thread (this one
included) hands it to its matching connections, so a dashboard on replica A sees a call answered
on replica B; without Redis (tests, one process) it is delivered in process.

Each connection has a bounded queue: a viewer that falls behind loses its *oldest* messages
(counted in ``dropped``), never blocks the broadcaster and never grows memory.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from settings import get_logger

log = get_logger(__name__)

CHANNEL = "conduit:connections"
# The listener wakes this often to notice that it should stop.
LISTEN_POLL_SECS = 1.0
# Default per-connection queue (CONNECTION_QUEUE_SIZE sets it in the app).
DEFAULT_QUEUE_SIZE = 256


@dataclass(eq=False)
class Connection:
    """One registered socket's queue of messages."""

    client_type: str
    call_id: str | None
    session_id: str | None
    topics: frozenset[str]
    queue_size: int
    connection_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    dropped: int = 0
    _queue: deque[dict[str, Any]] = field(init=False)
    _ready: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self._queue = deque(maxlen=self.queue_size)

    def offer(self, message: dict[str, Any]) -> None:
        with self._ready:
            if len(self._queue) == self.queue_size:
                self.dropped += 1  # deque(maxlen) drops the oldest on append
            self._queue.append(message)
            self._ready.notify()

    def next_message(self, timeout: float) -> dict[str, Any] | None:
        """The oldest queued message; None when none came within ``timeout``."""
        with self._ready:
            if not self._ready.wait_for(lambda: bool(self._queue), timeout):
                return None
            return self._queue.popleft()


class ConnectionManager:
    """The process's registered connections, fed from one Redis channel (or in process)."""

    def __init__(
        self,
        client: redis.Redis | None = None,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        channel: str = CHANNEL,
    ) -> None:
        self._client, self._channel, self._queue_size = client, channel, queue_size
        self._connections: dict[str, Connection] = {}
        self._lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._subscribed = threading.Event()
        self._stop = threading.Event()

    # --- registration ----------------------------------------------------------------------------
    def register(
        self,
        client_type: str,
        *,
        call_id: str | None = None,
        session_id: str | None = None,
        topics: Iterable[str] = (),
    ) -> Connection:
        connection = Connection(
            client_type, call_id, session_id, frozenset(topics), self._queue_size
        )
        with self._lock:
            self._connections[connection.connection_id] = connection
            self._ensure_listener()
        if self._client is not None:
            # Messages published before the subscription is live would be lost to this viewer.
            self._subscribed.wait(LISTEN_POLL_SECS * 5)
        return connection

    def unregister(self, connection: Connection) -> None:
        with self._lock:
            self._connections.pop(connection.connection_id, None)

    def connections(self, client_type: str | None = None) -> list[Connection]:
        with self._lock:
            return [
                c
                for c in self._connections.values()
                if client_type is None or c.client_type == client_type
            ]

    # --- broadcasting ----------------------------------------------------------------------------
    def broadcast_topic(self, topic: str, message: dict[str, Any]) -> None:
        self._publish({"scope": "topic", "key": topic, "message": message})

    def broadcast_session(self, session_id: str, message: dict[str, Any]) -> None:
        self._publish({"scope": "session", "key": session_id, "message": message})

    def _publish(self, envelope: dict[str, Any]) -> None:
        if self._client is None:
            self._deliver(envelope)
            return
        try:
            self._client.publish(self._channel, json.dumps(envelope))
        except redis.RedisError as error:
            # Live updates are best effort: the call goes on, this replica's viewers still see it.
            log.warning("live update not published (%s); delivering locally only", error)
            self._deliver(envelope)

    def _deliver(self, envelope: dict[str, Any]) -> None:
        scope, key, message = envelope.get("scope"), envelope.get("key"), envelope.get("message")
        if not isinstance(message, dict):
            return
        with self._lock:
            targets = [
                c
                for c in self._connections.values()
                if (scope == "topic" and key in c.topics)
                or (scope == "session" and key is not None and key == c.session_id)
            ]
        for connection in targets:
            connection.offer(message)

    # --- the listener ----------------------------------------------------------------------------
    def _ensure_listener(self) -> None:
        """Under the lock: one listener thread while there is anyone to deliver to."""
        if self._client is None or self._listener is not None:
            return
        self._subscribed.clear()
        self._listener = threading.Thread(
            target=self._listen, name="connection-manager-listener", daemon=True
        )
        self._listener.start()

    def _listen(self) -> None:
        assert self._client is not None
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self._channel)
            # The subscription is live once Redis confirms it.
            pubsub.get_message(timeout=LISTEN_POLL_SECS, ignore_subscribe_messages=False)
            self._subscribed.set()
            while not self._stop.is_set():
                with self._lock:
                    if not self._connections:
                        self._listener = None  # under the lock: a new viewer starts a new one
                        return
                message = pubsub.get_message(timeout=LISTEN_POLL_SECS)
                if message is None or message.get("type") != "message":
                    continue
                try:
                    envelope = json.loads(message["data"])
                except (TypeError, ValueError):
                    continue
                if isinstance(envelope, dict):
                    self._deliver(envelope)
        except redis.RedisError as error:
            log.warning("live updates listener stopped: %s", error)
            with self._lock:
                self._listener = None
        finally:
            self._subscribed.set()
            pubsub.close()

    def close(self) -> None:
        self._stop.set()
        listener = self._listener
        if listener is not None:
            listener.join(LISTEN_POLL_SECS * 3)
