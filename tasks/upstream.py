"""The one place Conduit calls Azure OpenAI: inside the shared quota, with errors made ours.

Every request goes the same way, in :func:`quota_call` (a context manager, for streamed answers)
or :func:`call_within_quota` (one request, built on it):

1. **acquire** the estimate from quota/ for a model in a lane (``batch`` by default,
   ``interactive`` for voice turns and user-facing calls); quota picks the first of the model's
   deployments with room (spill-over). A refusal is :class:`QuotaExhausted` with the limiter's
   ``retry_after_s``: the caller retries later without holding anything;
2. **send** to the deployment quota chose, with its client (``call.deployment``,
   ``call.client``); the SDK's own retries are off. If the path from acquire to the wire took
   longer than half the upstream margin, the charge is moved to the send time (the other half is
   for the wire), so our window holds it where the upstream's will. The time is taken when the
   request leaves (an HTTP client hook), not when the caller says it is about to send: a cold
   worker's first call spends seconds inside the SDK (its first import, client and request),
   after the caller's last line before sending;
3. **observe** ``x-ratelimit-remaining-tokens`` and ``-requests`` (of answers and of 429s): when
   other clients share the deployment, Azure has counted more than we did, and the limiter
   charges the difference so we stop over-spending;
4. **report** the usage the answer states, or on failure settle the lock: a request the upstream
   never received (no connection) is **released**; one it refused with 429 keeps its charge and
   puts the deployment in a cool-down every process sees (its ``retry-after``, at most
   QUOTA_COOLDOWN_SECONDS), so a backlog waits once instead of each task earning its own 429; a
   5xx keeps the charge and, when the model has another deployment, cools the failing one down
   (QUOTA_ERROR_COOLDOWN_SECONDS); any other failure after sending is reported with no usage,
   since Azure charges a request that arrived even when it then fails.

openai errors are mapped onto tasks.errors here and nowhere else: 429, 408, 409, 5xx, timeouts
and lost connections are transient (429 with the upstream's ``retry-after-ms``/``retry-after``);
any other 4xx, a content filter and a truncated structured answer are permanent.

What happens here is visible from outside: a ``quota.acquire`` span (lane, deployment chosen,
the refusal's retry_after) and an ``openai.<pool>`` span around the request (deployment, tokens,
HTTP status) in the task's trace, and, for ``/metrics``, the fleet's counts of refusals and of
upstream answers by status, with their latency (telemetry/fleet_metrics.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind

from quota import QuotaLimiter, StaleLock
from settings import Deployment, PoolName, get_logger
from tasks.clients import REQUEST_HOOKS, deployment_client
from tasks.connections import quota_limiter, redis_client
from tasks.errors import PermanentError, QuotaExhausted, TransientError
from telemetry import tracer
from telemetry.fleet_metrics import FleetMetrics

if TYPE_CHECKING:
    from openai import OpenAI

log = get_logger(__name__)

# Statuses worth another try: timeout, conflict, throttled, and the server's own failures.
TRANSIENT_STATUSES = frozenset({408, 409, 429})
# Which setting to check when the upstream refuses our credentials.
CREDENTIAL_SETTINGS = {
    "completion": "APP_OPENAI_API_KEY / APP_OPENAI_API_BASE",
    "embedding": "APP_EMBEDDING_API_KEY / APP_EMBEDDING_API_BASE",
    "whisper": "APP_OPENAI_API_KEY / APP_WHISPER_API_BASE",
}


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int = 0


def retry_after_s(headers: Any) -> float | None:
    """The upstream's wait hint: ``retry-after-ms`` (Azure) first, then ``retry-after`` seconds."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value is None:
            continue
        try:
            return float(value) / divisor
        except (TypeError, ValueError):
            continue
    return None


def _header_int(headers: Any, name: str) -> int | None:
    try:
        return max(0, int(float(headers.get(name))))
    except (TypeError, ValueError):
        return None


def _observe(
    limiter: QuotaLimiter,
    pool: PoolName,
    deployment: str,
    headers: Any,
    *,
    request_id: str,
    lasts_s: float | None = None,
) -> None:
    # Remaining requests are Azure's for its 10 s window; the limiter compares them with its own
    # as it was when request_id was sent (what left our window since was in Azure's count).
    tokens = _header_int(headers, "x-ratelimit-remaining-tokens")
    requests = _header_int(headers, "x-ratelimit-remaining-requests")
    if tokens is not None or requests is not None:
        limiter.observe_upstream(
            pool,
            deployment,
            remaining_tokens=tokens,
            remaining_requests=requests,
            request_id=request_id,
            lasts_s=lasts_s,
        )


def _as_conduit_error(  # noqa: PLR0911 - one answer per kind of error reads best flat
    error: Exception, pool: PoolName, deployment: str
) -> Exception:
    import openai

    where = f"{pool} deployment {deployment!r}"
    if isinstance(error, openai.APITimeoutError):
        return TransientError(f"{where} did not answer in time (APP_OPENAI_TIMEOUT_SECONDS)")
    if isinstance(error, openai.APIConnectionError):
        return TransientError(f"cannot reach the {where}: {error}")
    if isinstance(error, openai.ContentFilterFinishReasonError):
        return PermanentError(f"{where} withheld the answer: the content filter was triggered")
    if isinstance(error, openai.LengthFinishReasonError):
        return PermanentError(
            f"{where} ran out of max_tokens before the structured answer was "
            "complete; raise max_tokens"
        )
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        detail = f"{where} answered {status}: {error.message}"
        if status in TRANSIENT_STATUSES or status >= 500:
            return TransientError(detail, retry_after_s(error.response.headers))
        if status in (401, 403):
            return PermanentError(f"{detail} (check {CREDENTIAL_SETTINGS[pool]})")
        if error.code == "content_filter":
            return PermanentError(f"{where} refused the prompt: the content filter was triggered")
        return PermanentError(detail)
    return error


def _reached_upstream(error: Exception) -> bool:
    """Whether Azure received (and so charged) the request that failed with ``error``."""
    import openai

    return not (
        isinstance(error, openai.APIConnectionError)
        and not isinstance(error, openai.APITimeoutError)  # sent, possibly still being answered
    )


# The call whose request this thread's SDK call is about to put on the wire: set by sending(),
# cleared when the request leaves or the call ends (set, never reset by token: a streamed answer's
# generator may be resumed from another context).
_SENDING: ContextVar[QuotaCall | None] = ContextVar("conduit_quota_sending", default=None)


# Called with each quota call and its HTTP request as the request leaves, after any restamp: a
# benchmark's probe reads ``call.stamped_us`` here (bench/quota_utilization.py).
SEND_OBSERVERS: list[Callable[[QuotaCall, Any], None]] = []


def _on_the_wire(request: Any) -> None:
    """The HTTP client's request hook: the request leaves now."""
    call = _SENDING.get()
    if call is not None:
        _SENDING.set(None)  # one send is one request: the SDK's retries are off
        call._restamp_if_late()
        for observe in SEND_OBSERVERS:
            observe(call, request)


# Every SDK client built by tasks/clients.py calls this as each request leaves.
REQUEST_HOOKS.append(_on_the_wire)


@dataclass
class QuotaCall:
    """One request inside the quota: where to send it, and how to settle it.

    ``deployment`` is the deployment quota chose (send with ``model=call.deployment``) and
    ``client`` the SDK client for its endpoint. Call :meth:`sending` right before the request
    goes out, :meth:`observe` with the answer's headers, and :meth:`report` with its usage; the
    context manager settles whatever is left (see :func:`quota_call`)."""

    pool: PoolName
    model: str
    deployment: str
    request_id: str
    limiter: QuotaLimiter
    settings: Deployment
    deployments: int  # how many deployments the model has (a 5xx cools one down only if > 1)
    # When the charge was stamped (Redis's time, µs): at acquire, or moved by a restamp.
    stamped_us: int = 0
    # The same moment on this process's clock, for telling whether a send is late.
    stamped_at: float = field(default_factory=time.monotonic)
    settled: bool = False
    usage: Usage | None = None

    @property
    def client(self) -> OpenAI:
        return deployment_client(self.pool, self.settings)

    def sending(self) -> None:
        """The request is about to be sent: if the charge was stamped longer ago than half the
        upstream margin, count it from now, so our window holds it where the upstream's will; and
        again when the request actually leaves, if the SDK took that long to send it. The other
        half of the margin is for the wire (quota.sansio: ``restamp_after_s``)."""
        self._restamp_if_late()
        _SENDING.set(self)

    def _restamp_if_late(self) -> None:
        asked_at = time.monotonic()
        if not self.settled and asked_at - self.stamped_at > self.limiter.protocol.restamp_after_s:
            try:
                self.stamped_us = self.limiter.restamp(self.request_id)
            except StaleLock as error:
                # Held past its window: quota finished the lock; nothing was sent. Acquire again.
                self.settled = True
                raise QuotaExhausted(str(error), 0.0) from None
            self.stamped_at = asked_at

    def observe(self, headers: Any, lasts_s: float | None = None) -> None:
        """Book what the upstream's x-ratelimit-remaining-* headers say others spent (for
        ``lasts_s`` when the upstream said how long: a 429's retry-after)."""
        _observe(
            self.limiter,
            self.pool,
            self.deployment,
            headers,
            request_id=self.request_id,
            lasts_s=lasts_s,
        )

    def report(self, prompt_tokens: int, completion_tokens: int = 0) -> None:
        """Settle with the usage the answer stated."""
        self.usage = Usage(prompt_tokens, completion_tokens)
        self._settle(lambda: self.limiter.report(self.request_id, prompt_tokens, completion_tokens))

    def _settle(self, settle: Callable[[], Any]) -> None:
        if not self.settled:
            self.settled = True
            settle()

    def _failed(self, error: Exception) -> None:
        """Settle a request that ended in ``error``: see the module docstring for each case."""
        import openai

        status = error.status_code if isinstance(error, openai.APIStatusError) else None
        protocol = self.limiter.protocol
        if isinstance(error, openai.APIStatusError):
            # Before settling, while the lock still says when the request was sent. Every answer
            # with a status keeps its charge below, so the upstream's count and ours agree on it.
            # A 429's excess lasts until its retry-after: a cold upstream that counted our own
            # burst late is full for a moment, not for a window.
            hint_s = retry_after_s(error.response.headers) if status == 429 else None
            self.observe(error.response.headers, hint_s)
        completion = getattr(error, "completion", None)  # a parsed answer that was cut short
        if completion is not None and completion.usage is not None:
            usage = completion.usage
            self.report(usage.prompt_tokens, usage.completion_tokens)
        elif status == 429:
            assert isinstance(error, openai.APIStatusError)
            hint_s = retry_after_s(error.response.headers)
            cooldown_s = min(hint_s or protocol.cooldown_s, protocol.cooldown_s)
            self._settle(lambda: self.limiter.reject(self.request_id, cooldown_s))
        elif status is not None and status >= 500:
            cooldown_s = protocol.error_cooldown_s if self.deployments > 1 else 0.0
            self._settle(lambda: self.limiter.reject(self.request_id, cooldown_s))
        elif _reached_upstream(error):
            self.report(0, 0)
        else:
            self._settle(lambda: self.limiter.release(self.request_id))


@contextmanager
def quota_call(
    pool: PoolName, model: str, estimate: int, *, app_id: str, lane: str = "batch"
) -> Iterator[QuotaCall]:
    """Acquire ``estimate`` tokens of ``model`` (a model or one deployment) in ``lane``, yield the
    call to make, and settle it on the way out.

        with quota_call("completion", "gpt-4o", 900, app_id="voice", lane="interactive") as call:
            call.sending()
            stream = call.client.chat.completions.create(model=call.deployment, stream=True, ...)
            ...
            call.report(prompt_tokens, completion_tokens)

    Refused: :class:`QuotaExhausted` (later) or :class:`PermanentError` (never fits), nothing
    held. An openai error inside the block settles the lock (429 keeps the charge and cools the
    deployment down; not reached: released) and is raised as a tasks.errors error; a block that
    ends without a report is reported with no usage (the estimate stays charged)."""
    limiter = quota_limiter()
    with tracer.start_as_current_span(
        "quota.acquire",
        attributes={"conduit.pool": pool, "conduit.model": model, "conduit.lane": lane,
                    "conduit.estimate_tokens": estimate},
    ) as span:  # fmt: skip
        # Before the stamp: a send is judged late a little early, never too late.
        asked_at = time.monotonic()
        decision, stamped_us = limiter.acquire_timed(pool, model, estimate, app_id, lane)
        span.set_attribute("conduit.allowed", decision.allowed)
        if decision.deployment is not None:
            span.set_attribute("conduit.deployment", decision.deployment)
        if decision.retry_after_s is not None:
            span.set_attribute("conduit.retry_after_s", decision.retry_after_s)
    if not decision.allowed or decision.request_id is None or decision.deployment is None:
        _fleet_metrics().count(
            "conduit_quota_refusals_total", pool=pool, deployment=model, lane=lane
        )
        if decision.retry_after_s is None:
            raise PermanentError(decision.reason or f"{pool} quota refused {estimate} tokens")
        _fleet_metrics().observe(
            "conduit_quota_retry_after_seconds", decision.retry_after_s, pool=pool
        )
        raise QuotaExhausted(decision.reason or "quota refused", decision.retry_after_s)
    call = QuotaCall(
        pool=pool,
        model=model,
        deployment=decision.deployment,
        request_id=decision.request_id,
        stamped_us=stamped_us,
        stamped_at=asked_at,
        limiter=limiter,
        settings=limiter.protocol.deployment(pool, decision.deployment),
        deployments=len(limiter.protocol.deployments_of(pool, model)),
    )
    try:
        with _upstream_span(call):
            try:
                yield call
            except Exception as error:
                call._failed(error)
                mapped = _as_conduit_error(error, pool, call.deployment)
                if mapped is error:
                    raise
                raise mapped from error
    finally:
        if _SENDING.get() is call:  # sending() with no request on the wire after it
            _SENDING.set(None)
    call.report(0, 0)  # no report: it was sent and used at least the estimate


@cache
def _fleet_metrics() -> FleetMetrics:
    return FleetMetrics(redis_client())


def _status_of(error: BaseException) -> int | str:
    """The HTTP status an error carried, or its kind when no answer came (for span and metric);
    of the openai error behind ours, when it was mapped."""
    import openai

    error = error.__cause__ if isinstance(error.__cause__, openai.OpenAIError) else error
    if not isinstance(error, Exception):
        return "cancelled"  # GeneratorExit: a stream its reader stopped (a barge-in)
    if isinstance(error, openai.APIStatusError):
        return error.status_code
    return "timeout" if isinstance(error, openai.APITimeoutError) else "no_answer"


@contextmanager
def _upstream_span(call: QuotaCall) -> Iterator[Any]:
    """The request to Azure OpenAI as a client span, counted (by status) and timed for /metrics."""
    started = time.monotonic()
    with tracer.start_as_current_span(
        f"openai.{call.pool}",
        kind=SpanKind.CLIENT,
        attributes={"conduit.deployment": call.deployment, "conduit.model": call.model},
    ) as span:
        status: int | str = 200
        try:
            yield span
        except BaseException as error:
            status = _status_of(error)
            raise
        finally:
            span.set_attribute("http.response.status_code", str(status))
            metrics = _fleet_metrics()
            metrics.count(
                "conduit_upstream_requests_total",
                pool=call.pool,
                deployment=call.deployment,
                status=status,
            )
            metrics.observe(
                "conduit_upstream_request_duration_seconds",
                time.monotonic() - started,
                pool=call.pool,
                deployment=call.deployment,
            )
            if call.usage is not None:
                span.set_attribute("gen_ai.usage.input_tokens", call.usage.prompt_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", call.usage.completion_tokens)


def call_within_quota(
    pool: PoolName,
    deployment: str,
    estimate: int,
    *,
    app_id: str,
    send: Callable[[QuotaCall], Any],
    usage_of: Callable[[Any], Usage],
    lane: str = "batch",
) -> Any:
    """Run ``send`` (an SDK ``with_raw_response`` call, given the :class:`QuotaCall` whose
    ``deployment`` and ``client`` it must use) inside the quota; its parsed answer."""
    with quota_call(pool, deployment, estimate, app_id=app_id, lane=lane) as call:
        call.sending()
        response = send(call)
        call.observe(response.headers)
        answer = response.parse()
        usage = usage_of(answer)
        call.report(usage.prompt_tokens, usage.completion_tokens)
    return answer
