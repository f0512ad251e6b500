"""Connections a worker process opens once and reuses: Redis for quota, outbox and results, and
the quota limiter on it."""

from __future__ import annotations

from functools import lru_cache

import redis

from quota import QuotaLimiter
from quota.connect import quota_redis
from settings import Settings, get_settings


@lru_cache(maxsize=1)
def redis_client() -> redis.Redis:
    """This process's Redis client (a connection pool underneath; safe to share across threads).

    Created on first use, never at import: a prefork pool forks after import, and a socket
    shared across a fork is a socket two processes write to.
    """
    return redis.Redis.from_url(
        get_settings().broker_url, decode_responses=True, health_check_interval=30
    )


@lru_cache(maxsize=1)
def redis_bytes_client() -> redis.Redis:
    """The same Redis without decoding, for binary values (audio chunks)."""
    return redis.Redis.from_url(get_settings().broker_url, health_check_interval=30)


_limiter: list[tuple[Settings, QuotaLimiter]] = []  # at most one: (settings, its limiter)


def quota_limiter() -> QuotaLimiter:
    """This process's quota limiter on :func:`redis_client`, or on QUOTA_REDIS_URL when quota
    lives elsewhere (quota/connect.py). Rebuilt only when settings were reloaded (tests do that;
    a worker never does)."""
    settings = get_settings()
    if not _limiter or _limiter[0][0] is not settings:
        client = quota_redis(settings, broker=redis_client(), health_check_interval=30)
        _limiter[:] = [(settings, QuotaLimiter(client, settings))]
    return _limiter[0][1]
