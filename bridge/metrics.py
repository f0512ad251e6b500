"""What the bridge tells the dashboard: a heartbeat per bridge process and counters per queue.

Redis keys (the web dashboard reads them through :func:`read_bridge_stats`, nothing else):

    conduit:bridge:heartbeats          zset  bridge id -> unix time of its last beat
    conduit:bridge:info:<bridge id>    hash  host, pid, started_at (expires with the heartbeat)
    conduit:bridge:routes              hash  in_queue -> {"processor", "celery_queue", "out_queue"}
    conduit:bridge:counters:<queue>    hash  counter name -> total since the data began
    conduit:bridge:unrouted            string  queues holding messages no route reads (unrouted.py)
    conduit:bridge:counting_since      hash  queue -> unix time its counters began (first beat)

Counters are kept per input queue (received, published, dead_lettered, abandoned, locks_lost)
and per output queue (sent, send_failures, and too_large: results sent as their failure payload
because no message could carry them). They are added up in memory and written with the
heartbeat, once a second, so counting costs the message path nothing; a bridge killed outright
loses at most its last second of counts, never a message.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections import Counter
from typing import Any, cast

import redis

from bridge.unrouted import read_unrouted
from settings import Route
from tasks.outbox import stream_key
from tasks.processors import UnknownProcessor, get_processor

KEY_PREFIX = "conduit:bridge"
HEARTBEATS_KEY = f"{KEY_PREFIX}:heartbeats"
ROUTES_KEY = f"{KEY_PREFIX}:routes"
# When each queue's counters began: totals mean little without "since when".
COUNTING_SINCE_KEY = f"{KEY_PREFIX}:counting_since"
HEARTBEAT_SECS = 1.0
# A bridge that has not beaten for this long is shown as down (a few missed beats: a busy host).
ALIVE_WITHIN_SECS = 10.0
# Heartbeats of bridges gone this long are dropped from the list.
FORGET_AFTER_SECS = 24 * 3600

INGRESS_COUNTERS = ("received", "published", "dead_lettered", "abandoned", "locks_lost")
EGRESS_COUNTERS = ("sent", "send_failures", "too_large")


def info_key(bridge_id: str) -> str:
    return f"{KEY_PREFIX}:info:{bridge_id}"


def counters_key(queue: str) -> str:
    return f"{KEY_PREFIX}:counters:{queue}"


def celery_queue(route: Route) -> str:
    """The Celery queue a route's tasks wait in (its processor's; the name if it is unknown)."""
    try:
        return get_processor(route.processor).queue
    except UnknownProcessor:
        return route.processor


def new_bridge_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Counters:
    """Counts added from any thread, written to Redis by :meth:`Heartbeat.beat`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: Counter[tuple[str, str]] = Counter()

    def add(self, queue: str, name: str, amount: int = 1) -> None:
        if amount:
            with self._lock:
                self._pending[(queue, name)] += amount

    def take(self) -> Counter[tuple[str, str]]:
        with self._lock:
            taken, self._pending = self._pending, Counter()
        return taken

    def give_back(self, counts: Counter[tuple[str, str]]) -> None:
        """Counts whose write failed (Redis down) wait for the next beat."""
        with self._lock:
            self._pending.update(counts)


class Heartbeat:
    """Announces one bridge process and flushes its counters, in one round trip."""

    def __init__(
        self, client: redis.Redis, bridge_id: str, routes: list[Route], counters: Counters
    ) -> None:
        self.client, self.bridge_id, self.routes, self.counters = (
            client,
            bridge_id,
            routes,
            counters,
        )
        self.started_at = time.time()

    def beat(self) -> None:
        counts = self.counters.take()
        now = time.time()
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(HEARTBEATS_KEY, {self.bridge_id: now})
        pipe.zremrangebyscore(HEARTBEATS_KEY, "-inf", now - FORGET_AFTER_SECS)
        pipe.hset(
            info_key(self.bridge_id),
            mapping={
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started_at": self.started_at,
            },
        )
        pipe.expire(info_key(self.bridge_id), int(FORGET_AFTER_SECS))
        pipe.hset(
            ROUTES_KEY,
            mapping={
                route.in_queue: json.dumps(
                    {
                        "processor": route.processor,
                        "celery_queue": celery_queue(route),
                        "out_queue": route.out_queue,
                    }
                )
                for route in self.routes
            },
        )
        for route in self.routes:
            for queue in (route.in_queue, route.out_queue):
                pipe.hsetnx(COUNTING_SINCE_KEY, queue, str(now))
        for (queue, name), amount in counts.items():
            pipe.hincrby(counters_key(queue), name, amount)
        try:
            pipe.execute()
        except redis.RedisError:
            self.counters.give_back(counts)
            raise

    def stop(self) -> None:
        """Last beat on the way out: counts flushed, and the bridge shown as gone at once."""
        self.beat()
        self.client.zrem(HEARTBEATS_KEY, self.bridge_id)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _counts(raw: dict[Any, Any], names: tuple[str, ...]) -> dict[str, int]:
    stored = {_text(key): int(value) for key, value in raw.items()}
    return {name: stored.get(name, 0) for name in names}


def read_bridge_stats(client: redis.Redis, broker: redis.Redis | None = None) -> dict[str, Any]:
    """Everything the dashboard shows about the bridge, from Redis alone (any clients, decoded
    or not): ``{"alive", "bridges": [...], "routes": [...]}``. Per route: the counters, the
    ``celery_backlog`` (tasks waiting for a worker) and the ``outbox_lag`` (results written but
    not yet sent; the bridge deletes what it sent, so the stream holds only what is owed).
    ``unrouted``: the queues holding messages that no route reads, as last checked.

    ``client`` is the state Redis (these keys), ``broker`` Celery's, for the backlogs; None:
    the same Redis."""
    # redis-py types a sync client's replies as "maybe awaitable": cast to what they are.
    seconds, micros = cast(tuple[int, int], client.time())
    now = seconds + micros / 1e6
    beats = cast(
        list[tuple[str | bytes, float]], client.zrange(HEARTBEATS_KEY, 0, -1, withscores=True)
    )
    stored_routes = cast(dict[str | bytes, str | bytes], client.hgetall(ROUTES_KEY))
    routes = dict(sorted((_text(key), json.loads(value)) for key, value in stored_routes.items()))

    pipe = client.pipeline(transaction=False)
    pipe.hgetall(COUNTING_SINCE_KEY)
    for bridge_id, _ in beats:
        pipe.hgetall(info_key(_text(bridge_id)))
    for in_queue, route in routes.items():
        pipe.hgetall(counters_key(in_queue))
        pipe.hgetall(counters_key(route["out_queue"]))
        pipe.xlen(stream_key(route["out_queue"]))
    replies = iter(pipe.execute())
    celery = (broker or client).pipeline(transaction=False)
    for route in routes.values():
        # kombu keeps a Celery queue's unprioritised messages in a list named after it.
        celery.llen(route["celery_queue"])
    backlogs = iter(celery.execute())
    since = {_text(queue): float(value) for queue, value in next(replies).items()}

    bridges = []
    for bridge_id, last_beat in beats:
        info = {_text(k): _text(v) for k, v in next(replies).items()}
        age = max(0.0, now - last_beat)
        bridges.append(
            {
                "id": _text(bridge_id),
                "host": info.get("host"),
                "pid": int(info["pid"]) if "pid" in info else None,
                "started_at": float(info["started_at"]) if "started_at" in info else None,
                "last_beat_s_ago": round(age, 1),
                "alive": age <= ALIVE_WITHIN_SECS,
            }
        )
    route_stats = []
    for in_queue, route in routes.items():
        ingress, egress, outbox_lag = next(replies), next(replies), next(replies)
        route_stats.append(
            {
                "in_queue": in_queue,
                **route,
                **_counts(ingress, INGRESS_COUNTERS),
                **_counts(egress, EGRESS_COUNTERS),
                "celery_backlog": next(backlogs),
                "outbox_lag": outbox_lag,
                "counting_since": since.get(in_queue),
            }
        )
    return {
        "alive": any(bridge["alive"] for bridge in bridges),
        "bridges": bridges,
        "routes": route_stats,
        "unrouted": read_unrouted(client),
    }
