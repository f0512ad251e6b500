"""Connections a worker process opens once and reuses: the state Redis (quota, outbox, results,
fleet metrics: STATE_REDIS_URL, else REDIS_URL; maybe a cluster, settings/state_redis.py) and the
quota limiter on it. Celery's own connections to the broker are Celery's."""

from __future__ import annotations

from functools import lru_cache

import redis

from quota import QuotaLimiter
from settings import Settings, get_settings
from settings.state_redis import state_redis


@lru_cache(maxsize=1)
def redis_client() -> redis.Redis:
    """This process's state Redis client (a connection pool underneath; safe to share across
    threads).

    Created on first use, never at import: a prefork pool forks after import, and a socket
    shared across a fork is a socket two processes write to.
    """
    return state_redis(get_settings(), decode_responses=True, health_check_interval=30)


@lru_cache(maxsize=1)
def redis_bytes_client() -> redis.Redis:
    """The same Redis without decoding, for binary values (audio chunks)."""
    return state_redis(get_settings(), health_check_interval=30)


_limiter: list[tuple[Settings, QuotaLimiter]] = []  # at most one: (settings, its limiter)


def quota_limiter() -> QuotaLimiter:
    """This process's quota limiter on :func:`redis_client`. Rebuilt only when settings were
    reloaded (tests do that; a worker never does)."""
    settings = get_settings()
    if not _limiter or _limiter[0][0] is not settings:
        _limiter[:] = [(settings, QuotaLimiter(redis_client(), settings))]
    return _limiter[0][1]
