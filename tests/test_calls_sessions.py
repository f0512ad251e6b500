"""MemoManager: a session's history and context in Redis, shared by replicas, bounded, with TTL."""

from __future__ import annotations

from typing import cast

import pytest
import redis

from settings import get_settings
from voice.sessions import MemoManager, SessionError, map_call_to_session, session_for_call


def test_history_and_context_survive_a_new_process_view(redis_client: redis.Redis) -> None:
    settings = get_settings()
    memo = MemoManager.from_redis("s1", redis_client, settings)
    memo.append_to_history("user", "what is the weather today")
    memo.append_to_history("assistant", "It is sunny.")
    memo.set_context("target_number", "+15550100")
    # Nothing is written before persist.
    assert MemoManager.from_redis("s1", redis_client, settings).history == []
    memo.persist()

    again = MemoManager.from_redis("s1", redis_client, settings)
    assert again.history == [
        {"role": "user", "content": "what is the weather today"},
        {"role": "assistant", "content": "It is sunny."},
    ]
    assert again.get_context("target_number") == "+15550100"
    assert again.get_context("missing", "default") == "default"
    # The LLM gets the system prompt first, then the turns.
    assert again.messages("You are an agent.")[0] == {
        "role": "system",
        "content": "You are an agent.",
    }
    assert 0 < cast(int, redis_client.ttl("session:s1:history")) <= settings.session_ttl_s


def test_two_replicas_appending_to_one_session_keep_both_turns(redis_client: redis.Redis) -> None:
    settings = get_settings()
    replica_a = MemoManager.from_redis("s2", redis_client, settings)
    replica_b = MemoManager.from_redis("s2", redis_client, settings)
    replica_a.append_to_history("user", "first")
    replica_b.append_to_history("assistant", "second")
    replica_a.persist()
    replica_b.persist()
    contents = [m["content"] for m in MemoManager.from_redis("s2", redis_client, settings).history]
    assert contents == ["first", "second"]


def test_stored_history_is_bounded_oldest_first(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSION_MAX_MESSAGES", "3")
    monkeypatch.setenv("SESSION_MAX_BYTES", "2048")
    get_settings.cache_clear()
    settings = get_settings()
    memo = MemoManager.from_redis("s3", redis_client, settings)
    for n in range(6):
        memo.append_to_history("user", f"message {n}")
    memo.persist()
    stored = MemoManager.from_redis("s3", redis_client, settings).history
    assert [m["content"] for m in stored] == ["message 3", "message 4", "message 5"]

    big = MemoManager.from_redis("s4", redis_client, settings)
    for n in range(3):
        big.append_to_history("user", f"{n}" + "x" * 900)
    big.persist()
    kept = MemoManager.from_redis("s4", redis_client, settings).history
    assert [m["content"][0] for m in kept] == ["1", "2"]  # 3 x ~930 B > 2048 B: the oldest went
    with pytest.raises(SessionError, match="SESSION_MAX_BYTES"):
        big.append_to_history("user", "y" * 4096)
    with pytest.raises(SessionError, match="role"):
        big.append_to_history("robot", "hello")  # type: ignore[arg-type]


def test_call_session_map(redis_client: redis.Redis) -> None:
    assert session_for_call(redis_client, "call-1") is None
    map_call_to_session(redis_client, "call-1", "session-1", ttl_s=60)
    assert session_for_call(redis_client, "call-1") == "session-1"
    assert 0 < cast(int, redis_client.ttl("call_session_map:call-1")) <= 60
