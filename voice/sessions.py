"""Conversation state that any web replica can serve: :class:`MemoManager` (the older name).

A session's history and context slots live in Redis, so a call's callbacks, its dashboard and its
next media socket may land on any replica (or on a web process restarted mid-call):

- ``session:{id}:history``: a list of JSON messages ``{"role", "content"}``, oldest first;
- ``session:{id}:context``: a hash of JSON values (``target_number``, the caller, the call id ...);
- ``call_session_map:{call_id}``: the session a call belongs to (the older accelerator's key).

Appends and context changes are kept in memory until :meth:`MemoManager.persist`, which writes
only what changed (RPUSH, HSET) in one transaction, so two replicas appending to one session add
to it instead of overwriting each other. Every key gets the TTL again on each persist.
Bounded: at most ``SESSION_MAX_MESSAGES`` messages and about ``SESSION_MAX_BYTES`` of history;
the oldest messages go first. The in-memory :class:`voice.history` conversation history has the
same methods, so either can be handed to a handler.

    memo = MemoManager.from_redis(session_id, redis_client, settings)
    memo.append_to_history("user", "Hello")
    memo.set_context("target_number", "+1234567890")
    memo.persist()
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from settings import Settings

SESSION_PREFIX = "session:"
CALL_SESSION_MAP_PREFIX = "call_session_map:"
ROLES = frozenset({"system", "user", "assistant", "tool"})


class SessionError(ValueError):
    """A message or context value the session cannot hold; the message names it."""


def history_key(session_id: str) -> str:
    return f"{SESSION_PREFIX}{session_id}:history"


def context_key(session_id: str) -> str:
    return f"{SESSION_PREFIX}{session_id}:context"


def map_call_to_session(client: redis.Redis, call_id: str, session_id: str, ttl_s: int) -> None:
    client.set(f"{CALL_SESSION_MAP_PREFIX}{call_id}", session_id, ex=ttl_s)


def session_for_call(client: redis.Redis, call_id: str) -> str | None:
    value = client.get(f"{CALL_SESSION_MAP_PREFIX}{call_id}")
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class MemoManager:
    """One session's history and context, loaded from and persisted to Redis."""

    def __init__(
        self,
        session_id: str,
        client: redis.Redis,
        *,
        ttl_s: int,
        max_messages: int,
        max_bytes: int,
    ) -> None:
        self.session_id = session_id
        self._client = client
        self._ttl_s, self._max_messages, self._max_bytes = ttl_s, max_messages, max_bytes
        self._history: list[dict[str, str]] = []
        self._context: dict[str, Any] = {}
        self._new_messages: list[dict[str, str]] = []
        self._changed_context: set[str] = set()

    @classmethod
    def from_redis(cls, session_id: str, client: redis.Redis, settings: Settings) -> MemoManager:
        """The session as Redis holds it now (empty when it is new or expired)."""
        memo = cls(
            session_id,
            client,
            ttl_s=settings.session_ttl_s,
            max_messages=settings.session_max_messages,
            max_bytes=settings.session_max_bytes,
        )
        memo.refresh()
        return memo

    def refresh(self) -> None:
        """Reload from Redis, dropping changes not yet persisted."""
        with self._client.pipeline(transaction=True) as pipe:
            pipe.lrange(history_key(self.session_id), 0, -1)
            pipe.hgetall(context_key(self.session_id))
            raw_history, raw_context = pipe.execute()
        self._history = [json.loads(item) for item in raw_history]
        self._context = {_text(k): json.loads(v) for k, v in raw_context.items()}
        self._new_messages, self._changed_context = [], set()

    # --- history (the same methods as voice.history) ---------------------------------------------
    @property
    def history(self) -> list[dict[str, str]]:
        """The messages, oldest first, as chat completion messages."""
        return [dict(message) for message in self._history]

    def append_to_history(self, role: str, text: str) -> None:
        if role not in ROLES:
            raise SessionError(f"role must be one of {sorted(ROLES)}, not {role!r}")
        message = {"role": role, "content": text}
        if _size(message) > self._max_bytes:
            raise SessionError(
                f"a {role} message of {len(text)} characters exceeds SESSION_MAX_BYTES"
            )
        self._history.append(message)
        self._new_messages.append(message)
        self._trim_local()

    # --- context ---------------------------------------------------------------------------------
    def set_context(self, key: str, value: Any) -> None:
        encoded = json.dumps(value)  # refuses what JSON cannot hold, here rather than at persist
        if len(encoded) > self._max_bytes:
            raise SessionError(f"context {key!r} exceeds SESSION_MAX_BYTES")
        self._context[key] = json.loads(encoded)
        self._changed_context.add(key)

    def get_context(self, key: str, default: Any = None) -> Any:
        return self._context.get(key, default)

    @property
    def context(self) -> dict[str, Any]:
        return dict(self._context)

    # --- Redis -----------------------------------------------------------------------------------
    def persist(self) -> None:
        """Write what changed since the last load or persist, and renew the TTL."""
        hkey, ckey = history_key(self.session_id), context_key(self.session_id)
        with self._client.pipeline(transaction=True) as pipe:
            if self._new_messages:
                pipe.rpush(hkey, *(json.dumps(m) for m in self._new_messages))
                pipe.ltrim(hkey, -self._max_messages, -1)
            if self._changed_context:
                pipe.hset(
                    ckey, mapping={k: json.dumps(self._context[k]) for k in self._changed_context}
                )
            pipe.expire(hkey, self._ttl_s)
            pipe.expire(ckey, self._ttl_s)
            pipe.execute()
        self._new_messages, self._changed_context = [], set()
        self._trim_stored_bytes()

    def _trim_local(self) -> None:
        while len(self._history) > self._max_messages or (
            len(self._history) > 1 and sum(_size(m) for m in self._history) > self._max_bytes
        ):
            dropped = self._history.pop(0)
            if self._new_messages and self._new_messages[0] is dropped:
                self._new_messages.pop(0)

    def _trim_stored_bytes(self) -> None:
        """Another replica may have appended too: drop the oldest stored messages until the
        stored history fits the byte bound again."""
        key = history_key(self.session_id)
        stored = cast(list[bytes | str], self._client.lrange(key, 0, -1))
        total = sum(len(_text(item).encode()) for item in stored)
        drop = 0
        while total > self._max_bytes and drop < len(stored) - 1:
            total -= len(_text(stored[drop]).encode())
            drop += 1
        if drop:
            self._client.ltrim(key, drop, -1)
            self._history = [json.loads(item) for item in stored[drop:]]

    def delete(self) -> None:
        self._client.delete(history_key(self.session_id), context_key(self.session_id))
        self._history, self._context = [], {}
        self._new_messages, self._changed_context = [], set()


def _size(message: dict[str, str]) -> int:
    return len(json.dumps(message))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
