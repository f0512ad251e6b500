"""The Redis client quota state lives on: QUOTA_REDIS_URL (else REDIS_URL), a Redis Cluster when
the URL says so (``redis+cluster://`` / ``rediss+cluster://``) or QUOTA_REDIS_CLUSTER is set.

Every quota script touches the keys of one pool+model, all under one hash tag, so each runs on the
one node that owns that slot; the registry of deployments is a key of its own. Celery's broker is
not here: kombu needs a plain Redis, so REDIS_URL stays one even when quota moves to a cluster.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from settings import Settings

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


def on_broker(settings: Settings) -> bool:
    """Whether quota state shares the broker's Redis (then one client serves both)."""
    return settings.quota_url == settings.broker_url and not settings.quota_redis_cluster


def _cluster_url(settings: Settings) -> str | None:
    """The plain seed URL when quota state lives on a cluster, else None."""
    url = settings.quota_url
    if settings.quota_redis_cluster or is_cluster_url(url):
        return url.replace("+cluster", "", 1)
    return None


def quota_redis(
    settings: Settings, *, broker: redis.Redis | None = None, **options: Any
) -> redis.Redis:
    """A client for quota state (``options`` go to ``from_url``, e.g. ``decode_responses``);
    ``broker``, the process's broker client, is returned as is when quota lives there too."""
    if broker is not None and on_broker(settings):
        return broker
    plain = _cluster_url(settings)
    if plain:
        options.pop("health_check_interval", None)  # not a RedisCluster option
        # RedisCluster has the same command methods the limiter uses (EVALSHA, SCRIPT LOAD to
        # every primary, HSET, SADD ...); typed as Redis so callers need not care which.
        return redis.cluster.RedisCluster.from_url(plain, **options)  # type: ignore[return-value]
    return redis.Redis.from_url(settings.quota_url, **options)


def async_quota_redis(settings: Settings, **options: Any) -> redis.asyncio.Redis:
    """:func:`quota_redis` on ``redis.asyncio``, for the asyncio limiter's users."""
    plain = _cluster_url(settings)
    if plain:
        options.pop("health_check_interval", None)
        cluster = redis.asyncio.cluster.RedisCluster.from_url(plain, **options)
        return cluster  # type: ignore[return-value]  # the same commands, as quota_redis says
    return redis.asyncio.Redis.from_url(settings.quota_url, **options)
