"""``/health`` says the process answers (open, for liveness probes); ``/ready`` says whether the
system behind it can do work: Redis, the Celery broker, a live bridge, at least one worker, and
the Azure OpenAI endpoints (or the emulator standing in for them) answering at all.

``/ready`` answers 200 when every check passes and 503 otherwise, with each check's result, so a
load balancer stops sending traffic and a person sees which part is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx
from flask import Blueprint

from bridge.metrics import ALIVE_WITHIN_SECS, read_bridge_stats
from settings import Settings
from tasks.clients import Endpoint, completion_endpoint, embedding_endpoint, whisper_endpoint
from web.services import Services, services
from worker.client import check_broker as broker_answers
from worker.client import ping_workers

blueprint = Blueprint("health", __name__)

# Any HTTP answer, even 401 or 404, proves the endpoint is there; a live one answers in
# milliseconds, and /ready must stay quick when it is not.
UPSTREAM_PROBE_TIMEOUT_SECS = 2.0


@dataclass(frozen=True)
class Upstream:
    """One Azure OpenAI endpoint the tasks call, and the setting that names it."""

    url: str
    setting: str


def upstreams(settings: Settings) -> list[Upstream]:
    """The distinct endpoints of the completion, embedding and Whisper clients (tasks/clients.py
    decides them), each with the variable a person would fix."""
    found: dict[str, Upstream] = {}
    choices: list[tuple[Endpoint, str | None, str]] = [
        (completion_endpoint(settings), settings.openai_api_base, "APP_OPENAI_API_BASE"),
        (embedding_endpoint(settings), settings.embedding_api_base, "APP_EMBEDDING_API_BASE"),
        (whisper_endpoint(settings), settings.whisper_api_base, "APP_WHISPER_API_BASE"),
    ]
    for endpoint, own_base, variable in choices:
        if own_base is None and settings.embedded_openai:
            setting = "EMULATOR_HOST/EMULATOR_PORT (the emulator: APP_OPENAI_API_BASE is unset)"
        elif own_base is None:
            setting = "APP_OPENAI_API_BASE"
        else:
            setting = variable
        found.setdefault(endpoint.base_url, Upstream(endpoint.base_url, setting))
    return list(found.values())


def probe_upstream(upstream: Upstream) -> str | None:
    """None when the endpoint answers HTTP at all; else one line saying what failed and where."""
    try:
        httpx.get(upstream.url, timeout=UPSTREAM_PROBE_TIMEOUT_SECS)
    except httpx.HTTPError as error:
        return f"{upstream.url} ({upstream.setting}) unreachable: {type(error).__name__}: {error}"
    return None


def check_redis(conduit: Services) -> str:
    conduit.redis.ping()
    if conduit.state is conduit.redis:
        return "PING answered"
    conduit.state.ping()
    return "PING answered by the broker and the state Redis"


def check_broker(conduit: Services) -> str:
    broker_answers(conduit.celery)
    return "connected"


def check_bridge(conduit: Services) -> str:
    alive = [bridge for bridge in read_bridge_stats(conduit.state)["bridges"] if bridge["alive"]]
    if not alive:
        raise RuntimeError(f"no bridge heartbeat in the last {ALIVE_WITHIN_SECS:g} s")
    return f"{len(alive)} bridge(s) beating"


def check_workers(conduit: Services) -> str:
    return f"{ping_workers(conduit.celery)} worker(s) answered"


def check_upstream(conduit: Services) -> str:
    targets = upstreams(conduit.settings)
    problems = [problem for problem in map(probe_upstream, targets) if problem]
    if problems:
        raise RuntimeError("; ".join(problems))
    return ", ".join(upstream.url for upstream in targets) + " answering"


CHECKS: dict[str, Callable[[Services], str]] = {
    "redis": check_redis,
    "broker": check_broker,
    "bridge": check_bridge,
    "workers": check_workers,
    "upstream": check_upstream,
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
