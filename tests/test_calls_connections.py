"""ConnectionManager: topics and sessions, bounded queues dropping the oldest, fan-out through
Redis pub/sub between two managers (two replicas) on one Redis."""

from __future__ import annotations

import redis

from voice.connections import ConnectionManager

WAIT_SECS = 10.0


def test_topic_and_session_delivery_in_process() -> None:
    manager = ConnectionManager(None, queue_size=8)
    dashboard = manager.register("dashboard", topics={"calls"})
    call_page = manager.register("dashboard", session_id="s1")
    other_page = manager.register("dashboard", session_id="s2")
    manager.broadcast_topic("calls", {"n": 1})
    manager.broadcast_session("s1", {"n": 2})
    assert dashboard.next_message(1) == {"n": 1}
    assert call_page.next_message(1) == {"n": 2}
    assert dashboard.next_message(0.05) is None
    assert other_page.next_message(0.05) is None
    manager.unregister(dashboard)
    manager.broadcast_topic("calls", {"n": 3})
    assert dashboard.next_message(0.05) is None
    assert [c.session_id for c in manager.connections("dashboard")] == ["s1", "s2"]


def test_a_slow_viewer_loses_its_oldest_messages_only() -> None:
    manager = ConnectionManager(None, queue_size=3)
    viewer = manager.register("dashboard", topics={"calls"})
    for n in range(10):
        manager.broadcast_topic("calls", {"n": n})
    assert [viewer.next_message(1) for _ in range(3)] == [{"n": 7}, {"n": 8}, {"n": 9}]
    assert viewer.dropped == 7


def test_fan_out_across_replicas_through_redis(redis_url: str) -> None:
    client_a = redis.Redis.from_url(redis_url, decode_responses=True)
    client_b = redis.Redis.from_url(redis_url, decode_responses=True)
    replica_a, replica_b = ConnectionManager(client_a), ConnectionManager(client_b)
    try:
        on_a = replica_a.register("dashboard", topics={"calls"})
        on_b = replica_b.register("dashboard", topics={"calls"})
        transcript_on_b = replica_b.register("dashboard", session_id="s9")
        replica_a.broadcast_topic("calls", {"event": "answered"})
        replica_a.broadcast_session("s9", {"event": "transcript", "text": "hello"})
        assert on_b.next_message(WAIT_SECS) == {"event": "answered"}
        assert on_a.next_message(WAIT_SECS) == {"event": "answered"}
        assert transcript_on_b.next_message(WAIT_SECS) == {"event": "transcript", "text": "hello"}
    finally:
        replica_a.close()
        replica_b.close()
        client_a.close()
        client_b.close()
