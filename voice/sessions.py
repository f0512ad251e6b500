"""Conversation state that any web replica can serve: :class:`MemoManager` (the older name).

A session's history and context slots live in Redis, so a call's callbacks, its dashboard and its
next media socket may land on any replica (or on a web process restarted mid-call):

- ``session:{id}:history``: a list of JSON messages ``{"role", "content"}``, oldest first;
- ``session:{id}:context``: a hash of JSON values (``target_number``, the caller, the call id ...);
- ``call_session_map:{call_id}``: the session a call belongs to (the older accelerator's key).

Appends and context changes are kept in memory until :meth:`MemoManager.persist`, which writes
only what changed (RPUSH, HSET) in one transaction, so two replicas appending to one session add
to it instead of overwriting each other. Every key gets the TTL again on each persist.
Bounded: at most ``SESSION_MAX_MESSAGES`` messages and ``SESSION_MAX_BYTES`` of history in
Redis, the oldest messages going first; what the LLM is sent is cut to ``VOICE_HISTORY_TOKENS``.
It has the methods of :class:`voice.history.ConversationHistory` (``ConversationMemory``), so a
handler takes either.

    memo = MemoManager.from_redis(session_id, redis_client, settings)
    memo.append_to_history("user", "Hello")
    memo.set_context("target_number", "+1234567890")
    memo.persist()
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any, cast

import redis

from settings import Settings
from voice.history import ConversationHistory, Role

SESSION_PREFIX = "session:"
CALL_SESSION_MAP_PREFIX = "call_session_map:"
ROLES = frozenset({"system", "user", "assistant"})


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
    """One session's history and context, loaded from and persisted to Redis.

    In memory it is a :class:`voice.history.ConversationHistory` (the same token-bounded
    ``messages`` for the LLM); this class adds loading, persisting and the Redis bounds.
    """

    def __init__(
        self,
        session_id: str,
        client: redis.Redis,
        *,
        ttl_s: int,
        max_messages: int,
        max_bytes: int,
        max_tokens: int = 2000,
        persist_each_change: bool = False,
        on_message: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        self.session_id = session_id
        # A live call's memory: every turn written at once (another replica, or this one after a
        # restart, picks the call up from Redis) and shown on the call's page as it happens.
        self._persist_each_change = persist_each_change
        self._on_message = on_message
        # A call's stage threads and its writer append from their own threads.
        self._lock = threading.RLock()
        self._client = client
        self._ttl_s, self._max_messages, self._max_bytes = ttl_s, max_messages, max_bytes
        self._max_tokens = max_tokens
        self._memory = ConversationHistory(max_tokens=max_tokens)
        self._new_messages: list[dict[str, str]] = []
        self._changed_context: set[str] = set()

    @classmethod
    def from_redis(
        cls,
        session_id: str,
        client: redis.Redis,
        settings: Settings,
        *,
        persist_each_change: bool = False,
        on_message: Callable[[dict[str, str]], None] | None = None,
    ) -> MemoManager:
        """The session as Redis holds it now (empty when it is new or expired)."""
        memo = cls(
            session_id,
            client,
            ttl_s=settings.session_ttl_s,
            max_messages=settings.session_max_messages,
            max_bytes=settings.session_max_bytes,
            max_tokens=settings.voice_history_tokens,
            persist_each_change=persist_each_change,
            on_message=on_message,
        )
        memo.refresh()
        return memo

    def refresh(self) -> None:
        """Reload from Redis, dropping changes not yet persisted."""
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        with self._client.pipeline(transaction=True) as pipe:
            pipe.lrange(history_key(self.session_id), 0, -1)
            pipe.hgetall(context_key(self.session_id))
            raw_history, raw_context = pipe.execute()
        self._memory = ConversationHistory(max_tokens=self._max_tokens)
        for item in raw_history:
            message = json.loads(item)
            self._memory.append_to_history(message["role"], message["content"])
        for key, value in raw_context.items():
            self._memory.set_context(_text(key), json.loads(value))
        self._new_messages, self._changed_context = [], set()

    # --- the ConversationMemory interface (voice.history) ----------------------------------------
    @property
    def history(self) -> list[dict[str, str]]:
        """The messages, oldest first, as chat completion messages."""
        return self._memory.history

    def messages(self, system_prompt: str) -> list[dict[str, str]]:
        """What the LLM is sent: the system prompt and the latest turns that fit in the budget."""
        return self._memory.messages(system_prompt)

    def append_to_history(self, role: Role, text: str) -> None:
        if role not in ROLES:
            raise SessionError(f"role must be one of {sorted(ROLES)}, not {role!r}")
        text = text.strip()
        if not text:
            return
        message = {"role": role, "content": text}
        if _size(message) > self._max_bytes:
            raise SessionError(
                f"a {role} message of {len(text)} characters exceeds SESSION_MAX_BYTES"
            )
        with self._lock:
            self._memory.append_to_history(role, text)
            self._new_messages.append(message)
            if self._persist_each_change:
                self.persist()
        if self._on_message is not None:
            self._on_message(message)

    def set_context(self, key: str, value: Any) -> None:
        encoded = json.dumps(value)  # refuses what JSON cannot hold, here rather than at persist
        if len(encoded) > self._max_bytes:
            raise SessionError(f"context {key!r} exceeds SESSION_MAX_BYTES")
        with self._lock:
            self._memory.set_context(key, json.loads(encoded))
            self._changed_context.add(key)
            if self._persist_each_change:
                self.persist()

    def get_context(self, key: str, default: Any = None) -> Any:
        return self._memory.get_context(key, default)

    # --- Redis -----------------------------------------------------------------------------------
    def persist(self) -> None:
        """Write what changed since the last load or persist, and renew the TTL. The stored
        history keeps the newest SESSION_MAX_MESSAGES messages within SESSION_MAX_BYTES."""
        with self._lock:
            self._persist()

    def _persist(self) -> None:
        hkey, ckey = history_key(self.session_id), context_key(self.session_id)
        with self._client.pipeline(transaction=True) as pipe:
            if self._new_messages:
                pipe.rpush(hkey, *(json.dumps(m) for m in self._new_messages))
                pipe.ltrim(hkey, -self._max_messages, -1)
            if self._changed_context:
                pipe.hset(
                    ckey,
                    mapping={
                        k: json.dumps(self._memory.get_context(k)) for k in self._changed_context
                    },
                )
            pipe.expire(hkey, self._ttl_s)
            pipe.expire(ckey, self._ttl_s)
            pipe.execute()
        trimmed = bool(self._new_messages) and self._trim_stored_bytes()
        self._new_messages, self._changed_context = [], set()
        if trimmed:
            self.refresh()

    def _trim_stored_bytes(self) -> bool:
        """Drop the oldest stored messages until the history fits the byte bound (another
        replica may have appended too). True when something was dropped."""
        key = history_key(self.session_id)
        stored = cast(list[bytes | str], self._client.lrange(key, 0, -1))
        total = sum(len(_text(item).encode()) for item in stored)
        drop = 0
        while total > self._max_bytes and drop < len(stored) - 1:
            total -= len(_text(stored[drop]).encode())
            drop += 1
        if drop:
            self._client.ltrim(key, drop, -1)
        return drop > 0

    def delete(self) -> None:
        self._client.delete(history_key(self.session_id), context_key(self.session_id))
        self.refresh()


def _size(message: dict[str, str]) -> int:
    return len(json.dumps(message))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
