"""Connections a worker process opens once and reuses: Redis for quota, outbox and results."""

from __future__ import annotations

from functools import lru_cache

import redis

from settings import get_settings


@lru_cache(maxsize=1)
def redis_client() -> redis.Redis:
    """This process's Redis client (a connection pool underneath; safe to share across threads).

    Created on first use, never at import: a prefork pool forks after import, and a socket
    shared across a fork is a socket two processes write to.
    """
    return redis.Redis.from_url(get_settings().broker_url, decode_responses=True,
                                health_check_interval=30)
