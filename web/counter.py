"""The older HTTP token counter's API, answered by quota/, so services not yet moved keep working.

Same paths, request and response shapes as before (``/lock``, ``/report``, ``/release``,
``/status``, the same under ``/embedding/`` and ``/whisper/``): a refusal is HTTP 200 with
``allowed: false`` and the older wording, an id the limiter does not know is 400 ``{"detail"}``.
What changed is underneath: the counts live in Redis, shared by every replica, in a sliding window.
Each pool is the model settings name for it (APP_OPENAI_ENGINE, APP_EMBEDDING_ENGINE,
APP_WHISPER_ENGINE); with spill-over deployments a lock may land on any of them, and ``/status``
adds them up.

Counts are strict JSON integers: ``"10"``, ``true`` or ``1e3`` are a 400 naming the field, not a
number guessed at. While the quota's Redis is unreachable every route answers 503 with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import redis
from flask import Blueprint, Response, request
from pydantic import BaseModel, StrictInt, ValidationError

from quota import (
    AsyncQuotaLimiter,
    Decision,
    QuotaError,
    QuotaLeases,
    QuotaLimiter,
    QuotaStatus,
    Settlement,
)
from quota.sansio import QuotaProtocol
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


# Redis errors that mean "the quota store is unreachable now", not "the request is wrong".
UNREACHABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.BusyLoadingError,
)


class TokenRequest(BaseModel):
    app_id: str
    token_count: StrictInt


class WhisperRateRequest(BaseModel):
    app_id: str


class TokenReport(BaseModel):
    app_id: str
    request_id: str
    prompt_tokens: StrictInt
    completion_tokens: StrictInt
    rate_request_id: str | None = None  # accepted and ignored: request_id names both halves


class EmbeddingReport(BaseModel):
    app_id: str
    request_id: str
    prompt_tokens: StrictInt


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


def _model_of(pool: str) -> str:
    # The limiter's protocol holds the pools built once; settings.pools() builds them per call.
    return services().limiter.protocol.defaults[pool].deployment


def counter_status(statuses: list[QuotaStatus]) -> dict[str, Any]:
    """The older ``/status`` body for a model (its deployments added up): token fields for
    token pools, request fields for all."""
    fields: tuple[str, ...] = REQUEST_STATUS_FIELDS
    if statuses[0].pool != "whisper":
        fields = TOKEN_STATUS_FIELDS + fields
    values = [status._asdict() for status in statuses]
    # The older counter answered whole seconds; the model resets when its last deployment does.
    return {
        name: round(max(value[name] for value in values))
        if name == "reset_time_seconds"
        else sum(value[name] for value in values)
        for name in fields
    }


class BadCount(ValueError):
    """A count in the body is not a strict JSON integer."""


def parse_body(model: type[BaseModel], data: object) -> Any:
    """``data`` (decoded JSON) as ``model``; a count that is not a strict integer is
    :class:`BadCount` (400), anything else wrong a pydantic ValidationError (the FastAPI 422)."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        wrong = [problem for problem in error.errors() if problem["type"] == "int_type"]
        if not wrong:
            raise
        field = ".".join(str(part) for part in wrong[0]["loc"])
        raise BadCount(
            f"{field} must be a JSON integer (digits only: no quotes, decimal point, exponent or "
            f"true/false), got {wrong[0]['input']!r}"
        ) from None


Answer = tuple[int, Any]  # (HTTP status, JSON body)
ACTIONS = ("lock", "report", "release")


class CounterCall(NamedTuple):
    """A POST /lock, /report or /release, parsed and checked, without I/O: the limiter method
    that answers it and its arguments, and how its result becomes the older API's answer. The
    Flask views (sync limiter) and the counter server (web/counter_server.py, asyncio limiter)
    run the same calls."""

    method: Literal["acquire", "report", "release"]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    answer: Callable[[Any], Answer]
    # What a 400 says before quota's reason when it refuses the id.
    failure: str


def _lock_answer(pool: str) -> Callable[[Decision], Answer]:
    def answer(decision: Decision) -> Answer:
        body: dict[str, Any] = {"allowed": decision.allowed, "request_id": decision.request_id}
        if pool != "whisper":
            rate_id = decision.request_id.partition(":")[2] if decision.request_id else None
            body["rate_request_id"] = rate_id
        body["message"] = decision.reason
        return 200, body

    return answer


def _settled(_: Settlement) -> Answer:
    return 200, {"success": True}


def counter_call(action: str, pool: str, data: object, protocol: QuotaProtocol) -> CounterCall:
    """``data`` (the decoded body) of a POST ``action`` on ``pool`` as a :class:`CounterCall`;
    raises :class:`BadCount` or pydantic's ValidationError (the FastAPI 422) for a bad body."""
    if action == "lock":
        body = parse_body(LOCK_MODELS[pool], data)
        deployment = protocol.defaults[pool].deployment
        tokens = getattr(body, "token_count", 0)
        return CounterCall(
            "acquire", (pool, deployment, tokens, body.app_id), {}, _lock_answer(pool), ""
        )
    if action == "report":
        body = parse_body(REPORT_MODELS[pool], data)
        usage = (getattr(body, "prompt_tokens", 0), getattr(body, "completion_tokens", 0))
        return CounterCall(
            "report",
            (body.request_id, *usage),
            {"pool": pool},
            _settled,
            "Failed to report usage: ",
        )
    body = parse_body(ReleaseRequest, data)
    return CounterCall(
        "release", (body.request_id,), {"pool": pool}, _settled, "Failed to release: "
    )


def answer_call(limiter: QuotaLimiter, call: CounterCall) -> Answer:
    try:
        result = getattr(limiter, call.method)(*call.args, **call.kwargs)
    except QuotaError as error:
        return 400, {"detail": f"{call.failure}{error}"}
    return call.answer(result)


async def answer_call_async(limiter: AsyncQuotaLimiter | QuotaLeases, call: CounterCall) -> Answer:
    try:
        result = await getattr(limiter, call.method)(*call.args, **call.kwargs)
    except QuotaError as error:
        return 400, {"detail": f"{call.failure}{error}"}
    return call.answer(result)


@blueprint.errorhandler(BadCount)
def _bad_count(error: BadCount) -> tuple[Response, int]:
    return json_error(400, str(error))


def unreachable_detail(error: Exception) -> str:
    return f"quota store unreachable (STATE_REDIS_URL / REDIS_URL): {error}"


def unreachable(error: Exception) -> tuple[Response, int]:
    """503 with the reason: the quota store is down, which is neither the caller's fault nor a
    bug here (web/quota_api.py and web/counter_server.py answer it too)."""
    return json_error(503, unreachable_detail(error))


for _error in UNREACHABLE:
    blueprint.register_error_handler(_error, unreachable)


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


def _answer(action: str, pool: str) -> tuple[dict[str, Any], int]:
    limiter = services().limiter
    call = counter_call(action, pool, request.get_json(force=True), limiter.protocol)
    status, body = answer_call(limiter, call)
    return body, status


def lock(pool: str):
    return _answer("lock", pool)


def report(pool: str):
    return _answer("report", pool)


def release(pool: str):
    return _answer("release", pool)


def status(pool: str):
    return counter_status(services().limiter.model_status(pool, _model_of(pool)))


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
