"""The Redis client Conduit's own state lives on: STATE_REDIS_URL (else REDIS_URL), a Redis Cluster
when the URL says so (``redis+cluster://`` / ``rediss+cluster://``) or STATE_REDIS_CLUSTER is set.

"State" is everything Conduit keeps in Redis that is not Celery's: quota, the outbox, the bridge's
ledger, heartbeats and counters, the local bus, the fleet metrics. Celery's broker and result
backend are not here: kombu's Redis transport needs a plain Redis, so REDIS_URL stays one even
when the state moves to a cluster. Unset, both are the same Redis and one client serves both.

What makes the state Cluster-safe is its keys, not this module: every script and every
transaction touches the keys of one hash tag (one quota pool+model, one bus queue ``{queue}``,
one output queue ``{out_queue}``: the outbox stream and the ledger of its tasks), so each runs on
the one node owning that slot. Here only: which client, built from which URL.

    client = state_redis(settings, decode_responses=True)
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from settings.config import Settings

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
# Options a plain client takes and RedisCluster refuses.
_NOT_CLUSTER_OPTIONS = ("health_check_interval",)


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


def on_cluster(settings: Settings) -> bool:
    return settings.state_redis_cluster or is_cluster_url(settings.state_url)


def on_broker(settings: Settings) -> bool:
    """Whether the state shares the broker's Redis (then one client serves both)."""
    return settings.state_url == settings.broker_url and not on_cluster(settings)


def _cluster_options(settings: Settings, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The seed URL redis-py understands (no ``+cluster``) and the options RedisCluster takes."""
    plain = settings.state_url.replace("+cluster", "", 1)
    return plain, {k: v for k, v in options.items() if k not in _NOT_CLUSTER_OPTIONS}


def state_redis(
    settings: Settings, *, broker: redis.Redis | None = None, **options: Any
) -> redis.Redis:
    """A client for Conduit's state (``options`` go to ``from_url``, e.g. ``decode_responses``);
    ``broker``, the process's broker client, is returned as is when the state lives there too."""
    if broker is not None and on_broker(settings):
        return broker
    if on_cluster(settings):
        url, cluster_options = _cluster_options(settings, options)
        # RedisCluster has the command methods the state uses (EVALSHA routed by key, SCRIPT
        # LOAD to every primary, single-slot MULTI, SCAN over every primary ...); typed as Redis
        # so callers need not care which.
        return redis.cluster.RedisCluster.from_url(url, **cluster_options)  # type: ignore[return-value]
    return redis.Redis.from_url(settings.state_url, **options)


def async_state_redis(settings: Settings, **options: Any) -> redis.asyncio.Redis:
    """:func:`state_redis` for asyncio callers (the quota TokenClient)."""
    if on_cluster(settings):
        url, cluster_options = _cluster_options(settings, options)
        return redis.asyncio.cluster.RedisCluster.from_url(url, **cluster_options)  # type: ignore[return-value]
    return redis.asyncio.Redis.from_url(settings.state_url, **options)
