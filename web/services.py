"""What the web app connects to, opened once per process and shared by every request thread.

Views reach it with :func:`services`; the factory builds it with :meth:`Services.create` and binds
it with :meth:`Services.init_app`, as Flask extensions do.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import redis
from celery import Celery
from flask import Flask, current_app

from quota import QuotaLimiter
from settings import Settings
from settings.state_redis import state_redis
from web.broadcaster import StatusBroadcaster
from web.history import ChartHistory
from web.snapshot import SnapshotReader
from worker import create_celery, queue_names

EXTENSION_KEY = "conduit"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# Short, so a request (or /ready) fails fast instead of hanging while Redis is away.
REDIS_TIMEOUT_SECS = 2.0


def project_version() -> str:
    with PYPROJECT.open("rb") as file:
        return tomllib.load(file)["project"]["version"]


@dataclass
class Services:
    settings: Settings
    # Conduit's state (quota, bridge stats, fleet metrics, the dashboard's history):
    # STATE_REDIS_URL, maybe a cluster; ``redis`` itself when unset. (Declared first: below
    # the field named ``redis``, ``redis.Redis`` would name the field.)
    state: redis.Redis
    # The broker's Redis (Celery's queues; the voice agent's calls and sessions).
    redis: redis.Redis
    limiter: QuotaLimiter
    celery: Celery
    snapshot: SnapshotReader
    broadcaster: StatusBroadcaster
    version: str
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def create(cls, settings: Settings) -> Services:
        client = redis.Redis.from_url(
            settings.broker_url,
            decode_responses=True,
            socket_timeout=REDIS_TIMEOUT_SECS,
            socket_connect_timeout=REDIS_TIMEOUT_SECS,
            health_check_interval=30,
        )
        state = state_redis(
            settings,
            broker=client,
            decode_responses=True,
            socket_timeout=REDIS_TIMEOUT_SECS,
            socket_connect_timeout=REDIS_TIMEOUT_SECS,
        )
        limiter = QuotaLimiter(state, settings)
        reader = SnapshotReader(client, state, limiter, queue_names(settings))
        return cls(
            settings=settings,
            redis=client,
            state=state,
            limiter=limiter,
            celery=create_celery(settings),
            snapshot=reader,
            broadcaster=StatusBroadcaster(reader.read, ChartHistory(state)),
            version=project_version(),
        )

    def init_app(self, app: Flask) -> None:
        app.extensions[EXTENSION_KEY] = self


def services() -> Services:
    """The current app's :class:`Services`."""
    return current_app.extensions[EXTENSION_KEY]
