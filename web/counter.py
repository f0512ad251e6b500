"""The older HTTP token counter's API, answered by quota/, so services not yet moved keep working.

Same paths, request and response shapes as before (``/lock``, ``/report``, ``/release``,
``/status``, the same under ``/embedding/`` and ``/whisper/``): a refusal is HTTP 200 with
``allowed: false`` and the older wording, an id the limiter does not know is 400 ``{"detail"}``.
What changed is underneath: the counts live in Redis, shared by every replica, in a sliding window.
Each pool is the deployment settings name for it (APP_OPENAI_ENGINE, APP_EMBEDDING_ENGINE,
APP_WHISPER_ENGINE).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request
from pydantic import BaseModel

from quota import QuotaError, QuotaStatus
from settings import Settings
from web.errors import json_error
from web.services import services

blueprint = Blueprint("counter", __name__)

POOL_PREFIXES = {"completion": "", "embedding": "/embedding", "whisper": "/whisper"}
TOKEN_STATUS_FIELDS = ("available_tokens", "used_tokens", "locked_tokens")
REQUEST_STATUS_FIELDS = (
    "available_requests",
    "used_requests",
    "locked_requests",
    "reset_time_seconds",
)


class TokenRequest(BaseModel):
    app_id: str
    token_count: int


class WhisperRateRequest(BaseModel):
    app_id: str


class TokenReport(BaseModel):
    app_id: str
    request_id: str
    prompt_tokens: int
    completion_tokens: int
    rate_request_id: str | None = None  # accepted and ignored: request_id names both halves


class EmbeddingReport(BaseModel):
    app_id: str
    request_id: str
    prompt_tokens: int


class ReleaseRequest(BaseModel):
    app_id: str
    request_id: str
    rate_request_id: str | None = None


LOCK_MODELS: dict[str, type[BaseModel]] = {
    "completion": TokenRequest,
    "embedding": TokenRequest,
    "whisper": WhisperRateRequest,
}
REPORT_MODELS: dict[str, type[BaseModel]] = {
    "completion": TokenReport,
    "embedding": EmbeddingReport,
    "whisper": ReleaseRequest,
}


def deployment_of(pool: str, settings: Settings) -> str:
    return next(p.deployment for p in settings.pools() if p.name == pool)


def counter_status(status: QuotaStatus) -> dict[str, Any]:
    """The older ``/status`` body: token fields for token pools, request fields for all."""
    fields = REQUEST_STATUS_FIELDS
    if status.pool != "whisper":
        fields = TOKEN_STATUS_FIELDS + fields
    values = status._asdict()
    # The older counter answered whole seconds.
    return {
        name: round(values[name]) if name == "reset_time_seconds" else values[name]
        for name in fields
    }


def _body(model: type[BaseModel]) -> Any:
    return model.model_validate(request.get_json(force=True))


@blueprint.get("/")
def root():
    conduit = services()
    limits = {pool.name: pool for pool in conduit.settings.pools()}
    return {
        "app": "Conduit quota API (compatible with the OpenAI Token Counter)",
        "version": conduit.version,
        "status": "running",
        "start_time": conduit.started_at.isoformat(),
        "token_limit_per_minute": limits["completion"].tpm,
        "embedding_token_limit_per_minute": limits["embedding"].tpm,
        "rate_limit_per_minute": limits["completion"].rpm,
        "embedding_rate_limit_per_minute": limits["embedding"].rpm,
        "whisper_rate_limit_per_minute": limits["whisper"].rpm,
    }


def lock(pool: str):
    body = _body(LOCK_MODELS[pool])
    conduit = services()
    tokens = getattr(body, "token_count", 0)
    try:
        decision = conduit.limiter.acquire(
            pool, deployment_of(pool, conduit.settings), tokens, body.app_id
        )
    except QuotaError as error:
        return json_error(400, str(error))
    answer: dict[str, Any] = {"allowed": decision.allowed, "request_id": decision.request_id}
    if pool != "whisper":
        rate_id = decision.request_id.partition(":")[2] if decision.request_id else None
        answer["rate_request_id"] = rate_id
    answer["message"] = decision.reason
    return answer


def report(pool: str):
    body = _body(REPORT_MODELS[pool])
    try:
        services().limiter.report(
            body.request_id,
            getattr(body, "prompt_tokens", 0),
            getattr(body, "completion_tokens", 0),
            pool=pool,
        )
    except QuotaError as error:
        return json_error(400, f"Failed to report usage: {error}")
    return {"success": True}


def release(pool: str):
    body = _body(ReleaseRequest)
    try:
        services().limiter.release(body.request_id, pool=pool)
    except QuotaError as error:
        return json_error(400, f"Failed to release: {error}")
    return {"success": True}


def status(pool: str):
    conduit = services()
    return counter_status(conduit.limiter.status(pool, deployment_of(pool, conduit.settings)))


for _pool, _prefix in POOL_PREFIXES.items():
    _name = "" if _pool == "completion" else f"{_pool}_"
    for _view, _method in ((lock, "POST"), (report, "POST"), (release, "POST"), (status, "GET")):
        blueprint.add_url_rule(
            f"{_prefix}/{_view.__name__}",
            endpoint=f"{_name}{_view.__name__}",
            view_func=_view,
            methods=[_method],
            defaults={"pool": _pool},
        )
