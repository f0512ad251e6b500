"""``/health`` says the process answers (open, for liveness probes); ``/ready`` says whether the
system behind it can do work: Redis, the Celery broker, a live bridge, and at least one worker.

``/ready`` answers 200 when every check passes and 503 otherwise, with each check's result, so a
load balancer stops sending traffic and a person sees which part is missing.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint

from bridge.metrics import ALIVE_WITHIN_SECS, read_bridge_stats
from web.services import Services, services

blueprint = Blueprint("health", __name__)

# A worker that has not answered a broadcast ping in this long is not counted as seen.
WORKER_PING_TIMEOUT_SECS = 1.0
BROKER_CONNECT_TIMEOUT_SECS = 2.0


def check_redis(conduit: Services) -> str:
    conduit.redis.ping()
    return "PING answered"


def check_broker(conduit: Services) -> str:
    with conduit.celery.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=BROKER_CONNECT_TIMEOUT_SECS)
    return "connected"


def check_bridge(conduit: Services) -> str:
    alive = [bridge for bridge in read_bridge_stats(conduit.redis)["bridges"] if bridge["alive"]]
    if not alive:
        raise RuntimeError(f"no bridge heartbeat in the last {ALIVE_WITHIN_SECS:g} s")
    return f"{len(alive)} bridge(s) beating"


def check_workers(conduit: Services) -> str:
    replies = conduit.celery.control.ping(timeout=WORKER_PING_TIMEOUT_SECS)
    if not replies:
        raise RuntimeError(f"no Celery worker answered a ping within {WORKER_PING_TIMEOUT_SECS} s")
    return f"{len(replies)} worker(s) answered"


CHECKS: dict[str, Callable[[Services], str]] = {
    "redis": check_redis,
    "broker": check_broker,
    "bridge": check_bridge,
    "workers": check_workers,
}


@blueprint.get("/health")
def health():
    return {"status": "healthy"}


@blueprint.get("/ready")
def ready():
    conduit = services()
    results = {}
    for name, check in CHECKS.items():
        try:
            results[name] = {"ok": True, "detail": check(conduit)}
        except Exception as error:  # noqa: BLE001 - any failure means "not ready", said plainly
            results[name] = {"ok": False, "detail": f"{type(error).__name__}: {error}"}
    is_ready = all(result["ok"] for result in results.values())
    return {"ready": is_ready, "checks": results}, 200 if is_ready else 503
