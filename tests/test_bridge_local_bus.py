"""The local bus keeps Service Bus's semantics, on a real Redis."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from bridge.bus import OutgoingMessage
from bridge.errors import BusUnavailable, MessageTooLarge
from bridge.local_bus import LocalBus, queue_keys
from settings.redis_server import free_port
from tests.support.cluster import on_plain_and_cluster
from tests.support.waiting import wait_until


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    on_plain_and_cluster(metafunc)  # each test on a plain Redis and on a Redis Cluster


# Short enough that a test waits for a lock to expire, long enough to settle within it.
LOCK_S = 0.5
# How long a test waits for what the bus does in its own time: far more than it needs.
WAIT_SECS = 10


@pytest.fixture
def bus(state_client):
    return LocalBus(
        state_client, lock_duration_s=LOCK_S, max_delivery_count=3, duplicate_window_s=60
    )


def send(bus: LocalBus, *ids: str, queue: str = "q", **fields) -> None:
    bus.send(queue, [OutgoingMessage(body=f'{{"id": "{i}"}}', message_id=i, **fields) for i in ids])


def test_a_message_arrives_with_everything_it_was_sent_with(bus):
    send(bus, "m-1", correlation_id="c-1", application_properties={"app": "forms", "n": 2})
    [message] = bus.receiver("q").receive(10, 0)
    assert message.body == '{"id": "m-1"}'
    assert (message.message_id, message.correlation_id) == ("m-1", "c-1")
    assert message.application_properties == {"app": "forms", "n": 2}
    assert message.delivery_count == 1
    assert message.enqueued_time is not None


def test_messages_come_in_order_and_batches_are_bounded(bus):
    send(bus, *[f"m-{i}" for i in range(5)])
    receiver = bus.receiver("q")
    first, second = receiver.receive(3, 0), receiver.receive(3, 0)
    assert [m.message_id for m in first + second] == [f"m-{i}" for i in range(5)]


def test_a_locked_message_is_not_delivered_again_until_its_lock_expires(bus):
    send(bus, "m-1")
    receiver = bus.receiver("q")
    [first] = receiver.receive(10, 0)
    assert receiver.receive(10, 0) == []
    [again] = wait_until(lambda: receiver.receive(10, 0), WAIT_SECS, "the lock to expire")
    assert again.message_id == "m-1" and again.delivery_count == 2
    # The first lock is gone: completing with it does nothing, the new holder still has it.
    assert receiver.complete([first]) == [first]
    assert receiver.complete([again]) == []
    assert bus.peek("q", 10) == []


def test_complete_removes_and_abandon_redelivers_at_once(bus):
    send(bus, "done", "retry")
    receiver = bus.receiver("q")
    done, retry = receiver.receive(10, 0)
    assert receiver.complete([done]) == [] and receiver.abandon([retry]) == []
    [again] = receiver.receive(10, 0)
    assert again.message_id == "retry" and again.delivery_count == 2


def test_after_max_deliveries_a_message_is_dead_lettered(bus):
    send(bus, "poison", "expires")
    receiver = bus.receiver("q")
    for _ in range(3):  # "poison" is abandoned each time, "expires" lets its lock run out
        batch = receiver.receive(10, 0)
        assert {m.message_id for m in batch} == {"poison", "expires"}
        receiver.abandon([m for m in batch if m.message_id == "poison"])
        # The lock running out is what is tested, and a receive to see it would take the
        # message: wait past the lock, in Redis's own time as the bus counts it.
        time.sleep(LOCK_S + 0.2)
    assert receiver.receive(10, 0) == []
    dead = {m.message_id: m for m in bus.dead_letters("q", 10)}
    assert set(dead) == {"poison", "expires"}
    assert dead["poison"].dead_letter_reason == "MaxDeliveryCountExceeded"
    assert "3 delivery attempts" in dead["poison"].dead_letter_description


def test_dead_letter_keeps_reason_and_resubmit_starts_the_count_again(bus):
    send(bus, "bad")
    receiver = bus.receiver("q")
    [bad] = receiver.receive(10, 0)
    assert receiver.dead_letter(bad, "MalformedJson", "Expecting value: line 1 column 1")
    [dead] = bus.dead_letters("q", 10)
    assert (dead.dead_letter_reason, dead.dead_letter_description) == (
        "MalformedJson",
        "Expecting value: line 1 column 1",
    )
    assert bus.resubmit_dead_letters("q", 10) == 1
    assert bus.dead_letters("q", 10) == []
    [back] = receiver.receive(10, 0)
    assert back.message_id == "bad" and back.delivery_count == 1


def test_a_scheduled_message_waits_for_its_enqueue_time(bus):
    soon = datetime.now(UTC) + timedelta(seconds=0.5)
    send(bus, "later", scheduled_enqueue_time=soon)
    receiver = bus.receiver("q")
    assert receiver.receive(10, 0) == []
    assert [m.message_id for m in bus.peek("q", 10)] == ["later"]
    arrived = wait_until(lambda: receiver.receive(10, 0), WAIT_SECS, "the enqueue time")
    assert [m.message_id for m in arrived] == ["later"]


def test_a_message_id_sent_twice_within_the_window_is_dropped(bus, state_client):
    send(bus, "m-1", "m-1")
    send(bus, "m-1")
    assert len(bus.peek("q", 10)) == 1
    short = LocalBus(state_client, duplicate_window_s=0.2)

    def sent_again() -> bool:
        send(short, "m-1")  # dropped while the window lasts (a drop does not extend it)
        return len(bus.peek("q", 10)) == 2

    wait_until(sent_again, WAIT_SECS, "the duplicate window to pass", interval=0.05)
    assert len(bus.peek("q", 10)) == 2


def test_a_message_over_the_size_limit_is_refused_and_its_batch_not_sent(state_client):
    bus = LocalBus(state_client, max_message_bytes=1024)
    batch = [
        OutgoingMessage(body='{"id": 1}', message_id="small"),
        OutgoingMessage(body=json.dumps({"pad": "x" * 1024}), message_id="big"),
    ]
    with pytest.raises(MessageTooLarge, match="over the local bus's limit of 1024") as refused:
        bus.send("q", batch)
    assert refused.value.message_id == "big"
    assert bus.peek("q", 10) == []


def test_peek_shows_locked_and_available_messages_without_taking_them(bus):
    send(bus, "a", "b")
    receiver = bus.receiver("q")
    receiver.receive(1, 0)
    assert [(m.message_id, m.delivery_count) for m in bus.peek("q", 10)] == [("a", 1), ("b", 0)]
    assert [m.message_id for m in receiver.receive(10, 0)] == ["b"]


def blocked_in_redis(bus: LocalBus, queue: str) -> bool:
    """Whether a client waits (BLPOP) on the Redis node holding ``queue``."""
    client = bus.client
    if isinstance(client, redis.cluster.RedisCluster):
        node = client.get_node_from_key(queue_keys(queue)["signal"])
        clients = client.client_list(target_nodes=node)
    else:
        clients = client.client_list()
    # redis-py types client_list for its asyncio twin too.
    return any(c["cmd"] == "blpop" for c in cast("list[dict[str, Any]]", clients))


def test_a_waiting_receiver_wakes_when_a_message_is_sent(bus):
    received = []
    waiter = threading.Thread(target=lambda: received.extend(bus.receiver("q").receive(10, 30)))
    waiter.start()
    wait_until(lambda: blocked_in_redis(bus, "q"), WAIT_SECS, "the receiver to wait in Redis")
    send(bus, "m-1")
    # Without the wake-up the receive would sit out its 30 s wait.
    waiter.join(20)
    assert not waiter.is_alive() and [m.message_id for m in received] == ["m-1"]


def test_an_unreachable_redis_is_reported_as_bus_unavailable():
    client = redis.Redis(port=free_port(), decode_responses=True, retry=Retry(NoBackoff(), 0))
    with pytest.raises(BusUnavailable, match="unreachable"):
        LocalBus(client).receiver("q").receive(1, 0)
    client.close()


def test_every_queue_holding_messages_is_counted_wherever_its_keys_live(bus):
    # On a cluster the queues' keys spread over the three primaries: the SCAN visits each.
    queues = [f"q{i}" for i in range(12)]
    for n, queue in enumerate(queues, start=1):
        send(bus, *(f"{queue}-{i}" for i in range(n)), queue=queue)
    assert bus.active_message_counts() == {queue: n for n, queue in enumerate(queues, start=1)}


def test_each_queue_keeps_all_its_keys_in_one_cluster_slot(redis_cluster):
    # Every script and MULTI of the bus touches the keys of one queue (receive, lock, complete,
    # abandon, dead-letter, resubmit, peek): a cluster runs them only if those share a slot.
    # Asked of the cluster itself, not computed here.
    node = redis.Redis.from_url(redis_cluster.url)
    try:
        for queue in ("q", "echo_iq", "forms:in", "{odd}"):
            slots = {node.cluster("keyslot", key) for key in queue_keys(queue).values()}
            assert len(slots) == 1, f"{queue}: keys in slots {slots}"
    finally:
        node.close()
