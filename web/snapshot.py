"""Everything the dashboard shows, read from Redis once per tick for all viewers.

One pipelined round trip holds the server clock, every pool+deployment's quota status (the
limiter's own script, so the numbers are the ones it decides by), each Celery queue's depth and
the messages workers hold; the bridge's heartbeats and counters come from the bridge's own reader
(:func:`bridge.metrics.read_bridge_stats`), which owns those keys. The set of deployments comes
from the previous tick's registry read, so a deployment first used now appears one tick later
instead of costing another round trip.
"""

from __future__ import annotations

from typing import Any

import redis

from bridge.metrics import read_bridge_stats
from quota import QuotaLimiter, QuotaStatus
from quota.scripts import reloading, sha_of

# kombu's Redis transport keeps messages delivered to workers but not yet acked in this hash.
UNACKED_KEY = "unacked"


class SnapshotReader:
    """Reads one dashboard frame; safe to call from one thread (the broadcaster's)."""

    def __init__(
        self, client: redis.Redis, state: redis.Redis, limiter: QuotaLimiter, queues: list[str]
    ) -> None:
        # client: the broker's Redis (Celery's queues); state: where the bridge's stats live.
        self._client = client
        self._state = state
        self._limiter = limiter
        self._protocol = limiter.protocol
        self._queues = queues
        self._deployments = self._protocol.known_deployments([])

    def read(self) -> dict[str, Any]:
        # Redis restarted or its scripts were flushed: the status script is loaded again, once.
        return reloading(self._client, "status", self._read_once)

    def _read_once(self) -> dict[str, Any]:
        # State on its own Redis (STATE_REDIS_URL, maybe a cluster): read quota there, apart.
        apart = self._limiter.client is not self._client
        calls = [self._protocol.status(pool, deployment) for pool, deployment in self._deployments]
        pipe = self._client.pipeline(transaction=False)
        pipe.time()
        if not apart:
            pipe.smembers(self._protocol.registry_key)
            for call in calls:
                # EVALSHA by the script's digest: no load round trip unless Redis lost the script.
                pipe.evalsha(sha_of(call.script), len(call.keys), *call.keys, *call.args)
        for queue in self._queues:
            pipe.llen(queue)
        pipe.hlen(UNACKED_KEY)
        replies = pipe.execute()

        seconds, microseconds = replies[0]
        offset = 1
        if apart:
            statuses = self._limiter.all_status()
            self._deployments = [(status.pool, status.deployment) for status in statuses]
        else:
            self._deployments = self._protocol.known_deployments(replies[1])
            offset = 2
            statuses = [
                call.parse(reply)
                for call, reply in zip(calls, replies[offset : offset + len(calls)], strict=True)
            ]
            offset += len(calls)
        depths = replies[offset : offset + len(self._queues)]
        offset += len(self._queues)
        now = int(seconds) + int(microseconds) / 1e6
        return {
            "time": now,
            "window_seconds": self._protocol.window_s,
            "pools": [pool_view(status) for status in statuses],
            "queues": [
                {"name": name, "depth": depth}
                for name, depth in zip(self._queues, depths, strict=True)
            ],
            "in_progress": replies[offset],
            "bridge": read_bridge_stats(self._state, self._client),
            "point": chart_point(now, statuses),
        }


def series_name(status: QuotaStatus) -> str:
    return f"{status.pool}/{status.deployment}"


def pool_view(status: QuotaStatus) -> dict[str, Any]:
    view = status.as_dict()
    view["name"] = series_name(status)
    return view


def chart_point(now: float, statuses: list[QuotaStatus]) -> dict[str, Any]:
    """One point per tick for each series: what the window holds (used + locked) now."""
    return {
        "t": now,
        "series": {
            series_name(status): {
                "tokens": status.used_tokens + status.locked_tokens,
                "requests": status.used_requests + status.locked_requests,
                "tpm": status.tpm,
                "rpm": status.rpm,
            }
            for status in statuses
        },
    }
