"""What a power loss under the broker Redis does to messages the ingress already completed.

A power loss keeps what Redis fsynced and loses the rest of its AOF. With ``appendfsync
everysec`` that is up to the last second: these tests kill the broker Redis (SIGKILL) right after
the ingress completed its messages, cut the AOF back to the size it had one second before the
kill, and restart Redis on it. A message is lost if its bus completion survived but its ledger
record (from which the sweeper would publish its task again) did not.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import pytest
import redis

from bridge.bus_api import OutgoingMessage
from bridge.celery_publisher import CeleryPublisher
from bridge.durability import redis_durability
from bridge.ingress import Ingress
from bridge.ledger import Ledger, ledger_key
from bridge.local_bus import LocalBus
from bridge.metrics import Counters
from settings import Route, load_settings
from settings.jsonsafe import DEFAULT_MAX_DEPTH
from settings.redis_server import RedisServer
from tasks.processors import task_id_for
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

ROUTE = Route.parse("echo_iq:echo:echo_oq")
MESSAGES = 300
# What appendfsync everysec may lose on a power loss: the writes of about the last second.
EVERYSEC_WINDOW_SECS = 1.0
SAMPLE_SECS = 0.01


class AofSizes:
    """The AOF's size over time, sampled in a thread, to cut it back as a power loss would."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECS):
            try:
                size = self.server.aof_file().stat().st_size
            except FileNotFoundError:
                size = 0
            self.samples.append((time.monotonic(), size))

    @contextmanager
    def running(self) -> Iterator[AofSizes]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()

    def wait_past(self, moment: float) -> None:
        """Until a sample later than ``moment`` exists (so what came before it can be kept)."""
        wait_until(
            lambda: self.samples and self.samples[-1][0] > moment,
            30,
            "an AOF sample (the sampler stopped?)",
            interval=SAMPLE_SECS,
        )

    def size_at(self, moment: float) -> int:
        """The AOF's size at the last sample no later than ``moment`` (0 before the first)."""
        return max((size for at, size in self.samples if at <= moment), default=0)


def cut_power(server: RedisServer, sizes: AofSizes, window_s: float) -> int:
    """Kill Redis, then keep only the AOF it had ``window_s`` before: the bytes cut."""
    killed_at = time.monotonic()
    server.kill()
    aof = server.aof_file()
    keep = sizes.size_at(killed_at - window_s)
    cut = aof.stat().st_size - keep
    os.truncate(aof, keep)
    return cut


def send(bus: LocalBus, count: int) -> list[str]:
    ids = [f"m-{uuid.uuid4().hex[:8]}-{i}" for i in range(count)]
    bus.send(
        ROUTE.in_queue,
        [OutgoingMessage(body=json.dumps({"id": str(i)}), message_id=m) for i, m in enumerate(ids)],
    )
    return ids


def move_all(bus: LocalBus, broker_url: str, count: int) -> None:
    """Run the ingress until it has taken in and completed ``count`` messages."""
    # Lazy, as everywhere in the tests: importing worker builds its module-level Celery app.
    from worker import create_celery

    app = create_celery(load_settings(redis_url=broker_url))
    client = redis.Redis.from_url(broker_url, decode_responses=True)
    try:
        ingress = Ingress(
            ROUTE,
            bus.receiver(ROUTE.in_queue),
            CeleryPublisher(app),
            Ledger(client),
            Counters(),
            batch_size=32,
            high_water=10 * count,
            max_idle_s=1,
            celery_queue="echo",
            max_message_bytes=256 * 1024,
            max_json_depth=DEFAULT_MAX_DEPTH,
        )
        moved = 0
        while moved < count:
            moved += ingress.run_once()
    finally:
        app.close()
        client.close()


def lost(bus: LocalBus, broker: redis.Redis, ids: list[str]) -> list[str]:
    """Messages neither on the bus (waiting or locked) nor recorded as a task in the ledger."""
    on_bus = {m.message_id for m in bus.peek(ROUTE.in_queue, 10 * len(ids))}
    # redis-py types a sync client's replies as "maybe awaitable": cast to what they are.
    recorded = set(cast(list[str], broker.zrange(ledger_key(ROUTE.out_queue), 0, -1)))
    return [m for m in ids if m not in on_bus and task_id_for(ROUTE.in_queue, m) not in recorded]


def test_local_bus_loses_nothing_when_the_last_second_of_the_aof_is_cut(tmp_path: Path):
    # The bus's completions are in the same ordered log as the records: a cut end takes both.
    server = RedisServer(tmp_path / "redis", appendfsync="everysec").start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        bus = LocalBus(client, lock_duration_s=30)
        with AofSizes(server).running() as sizes:
            ids = send(bus, MESSAGES)
            # The sends themselves must be older than the window: losing a message the sender
            # was told was accepted is not what this test is about.
            sizes.wait_past(time.monotonic() + EVERYSEC_WINDOW_SECS + 0.1)
            move_all(bus, server.url, MESSAGES)
            assert bus.peek(ROUTE.in_queue, 1) == []  # every message completed
            assert cut_power(server, sizes, EVERYSEC_WINDOW_SECS) > 0
        client.close()
        server.start()
        client = redis.Redis.from_url(server.url, decode_responses=True)
        assert lost(LocalBus(client), client, ids) == []
    finally:
        client.close()
        server.stop()


def test_an_external_bus_over_everysec_loses_the_last_second_and_the_bridge_says_so(
    tmp_path: Path,
):
    # The window bridge/durability.py documents: completions on a bus outside Redis survive,
    # the last second of records does not. The test harness sees it, so the zero above is real.
    bus_server = RedisServer(tmp_path / "bus").start()
    broker = RedisServer(tmp_path / "broker", appendfsync="everysec").start()
    bus_client = redis.Redis.from_url(bus_server.url, decode_responses=True)
    broker_client = redis.Redis.from_url(broker.url, decode_responses=True)
    try:
        durability = redis_durability(broker_client)
        assert not durability.durable
        assert "appendfsync everysec" in durability.detail
        assert "REDIS_APPENDFSYNC=always" in durability.detail
        bus = LocalBus(bus_client, lock_duration_s=30)
        ids = send(bus, MESSAGES)
        with AofSizes(broker).running() as sizes:
            sizes.wait_past(time.monotonic())
            move_all(bus, broker.url, MESSAGES)
            cut_power(broker, sizes, EVERYSEC_WINDOW_SECS)
        broker_client.close()
        broker.start()
        broker_client = redis.Redis.from_url(broker.url, decode_responses=True)
        assert lost(bus, broker_client, ids), "the cut kept every record: not a power loss"
    finally:
        bus_client.close()
        broker_client.close()
        broker.stop()
        bus_server.stop()


def test_an_external_bus_over_appendfsync_always_loses_nothing_to_a_crash(tmp_path: Path):
    # Under "always" Redis fsyncs before it answers, so a power loss keeps every acknowledged
    # write: no cut is allowed. What can be checked is that the setting reaches the server, the
    # bridge recognises it, and a crash (SIGKILL, no shutdown fsync) right after loses nothing.
    settings = load_settings(service_bus_namespace="example")
    assert settings.redis_fsync_policy == "always"  # what REDIS_APPENDFSYNC=auto picks for it
    bus_server = RedisServer(tmp_path / "bus").start()
    broker = RedisServer(tmp_path / "broker", appendfsync=settings.redis_fsync_policy).start()
    bus_client = redis.Redis.from_url(bus_server.url, decode_responses=True)
    broker_client = redis.Redis.from_url(broker.url, decode_responses=True)
    try:
        assert broker_client.config_get("appendfsync") == {"appendfsync": "always"}
        assert redis_durability(broker_client).durable
        bus = LocalBus(bus_client, lock_duration_s=30)
        ids = send(bus, MESSAGES)
        move_all(bus, broker.url, MESSAGES)
        broker.kill()
        broker_client.close()
        broker.start()
        broker_client = redis.Redis.from_url(broker.url, decode_responses=True)
        assert lost(bus, broker_client, ids) == []
    finally:
        bus_client.close()
        broker_client.close()
        broker.stop()
        bus_server.stop()


def test_the_bridge_warns_at_start_when_service_bus_meets_an_everysec_redis(redis_url, caplog):
    # The session's Redis fsyncs every second; with Service Bus configured, the bridge says
    # what that means, naming the setting that closes the window.
    from bridge.runner import Bridge

    settings = load_settings(
        service_bus_connection_string=(
            "Endpoint=sb://example.servicebus.windows.net/;SharedAccessKeyName=k;"
            "SharedAccessKey=c2VjcmV0"
        )
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    with caplog.at_level(logging.WARNING, logger="bridge.runner"):
        bridge = Bridge(settings, LocalBus(client))
    bridge.close()
    client.close()
    assert "appendfsync everysec: a power loss or host crash can lose" in caplog.text
    assert "REDIS_APPENDFSYNC=always" in caplog.text


def test_with_the_state_on_a_cluster_the_bridge_asks_every_primary_as_well(
    redis_url, redis_cluster, caplog
):
    # Apart from the broker, a message's writes span several AOFs (the broker's and one per
    # state primary): one ordered log no longer protects the local bus, so each is checked.
    from bridge.runner import Bridge

    cluster_url = redis_cluster.url.replace("redis://", "redis+cluster://", 1)
    settings = load_settings(redis_url=redis_url, state_redis_url=cluster_url)
    assert settings.uses_local_bus
    with caplog.at_level(logging.INFO, logger="bridge.runner"):
        bridge = Bridge(settings, LocalBus.from_settings(settings))
    bridge.close()
    lines = [record.getMessage() for record in caplog.records if record.name == "bridge.runner"]
    assert any(line.startswith("the broker Redis fsyncs its AOF") for line in lines)
    for port in redis_cluster.ports:
        # The suite's cluster nodes keep no AOF: each is named, with the setting that fixes it.
        assert any(
            line.startswith(f"state Redis node 127.0.0.1:{port} keeps no AOF (appendonly no)")
            for line in lines
        ), lines


def test_the_local_bus_on_the_brokers_redis_needs_no_check(redis_url, caplog):
    from bridge.runner import Bridge

    settings = load_settings(redis_url=redis_url)
    with caplog.at_level(logging.INFO, logger="bridge.runner"):
        bridge = Bridge(settings, LocalBus.from_settings(settings))
    bridge.close()
    assert "AOF" not in caplog.text
