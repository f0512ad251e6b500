"""The one place Conduit calls Azure OpenAI: inside the shared quota, with errors made ours.

Every request goes the same way:

1. **acquire** the estimate from quota/ (a refusal is :class:`QuotaExhausted` with the limiter's
   ``retry_after_s``: the caller retries later without holding anything);
2. **call** the SDK (raw response, for the headers; the SDK's own retries are off);
3. **observe** ``x-ratelimit-remaining-tokens`` and ``-requests``: when other clients share the
   deployment, Azure has counted more than we did, and the limiter charges the difference so we
   stop over-spending;
4. **report** the usage the answer states, or on failure settle the lock: a request the upstream
   refused (429) or never received (no connection) is **released**; one it received is reported
   with no usage, since Azure charges a request that arrived even when it then fails.

openai errors are mapped onto tasks.errors here and nowhere else: 429, 408, 409, 5xx, timeouts
and lost connections are transient (429 with the upstream's ``retry-after-ms``/``retry-after``);
any other 4xx, a content filter and a truncated structured answer are permanent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from settings import get_logger
from tasks.connections import quota_limiter
from tasks.errors import PermanentError, QuotaExhausted, TransientError

if TYPE_CHECKING:
    from openai._legacy_response import LegacyAPIResponse

log = get_logger(__name__)

PoolName = Literal["completion", "embedding", "whisper"]
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


def _observe(pool: PoolName, deployment: str, headers: Any) -> None:
    # Remaining requests are Azure's for its 10 s window; the limiter compares them with its own.
    tokens = _header_int(headers, "x-ratelimit-remaining-tokens")
    requests = _header_int(headers, "x-ratelimit-remaining-requests")
    if tokens is not None or requests is not None:
        quota_limiter().observe_upstream(
            pool, deployment, remaining_tokens=tokens, remaining_requests=requests
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

    if isinstance(error, openai.APITimeoutError):
        return True  # sent, and possibly still being answered
    if isinstance(error, openai.APIConnectionError):
        return False
    return not (isinstance(error, openai.APIStatusError) and error.status_code == 429)


def call_within_quota(
    pool: PoolName,
    deployment: str,
    estimate: int,
    *,
    app_id: str,
    send: Callable[[], LegacyAPIResponse[Any]],
    usage_of: Callable[[Any], Usage],
) -> Any:
    """Run ``send`` (an SDK ``with_raw_response`` call) inside the quota; its parsed answer."""
    limiter = quota_limiter()
    decision = limiter.acquire(pool, deployment, estimate, app_id)
    if not decision.allowed:
        if decision.retry_after_s is None:
            raise PermanentError(decision.reason)
        raise QuotaExhausted(decision.reason, decision.retry_after_s)
    request_id = decision.request_id
    try:
        response = send()
        _observe(pool, deployment, response.headers)
        answer = response.parse()
    except Exception as error:
        import openai

        completion = getattr(error, "completion", None)  # a parsed answer that was cut short
        if completion is not None and completion.usage is not None:
            limiter.report(
                request_id, completion.usage.prompt_tokens, completion.usage.completion_tokens
            )
        elif _reached_upstream(error):
            limiter.report(request_id, 0, 0)
        else:
            limiter.release(request_id)
        # After settling: the upstream's remainder does not include a request it refused.
        if isinstance(error, openai.APIStatusError):
            _observe(pool, deployment, error.response.headers)
        mapped = _as_conduit_error(error, pool, deployment)
        if mapped is error:
            raise
        raise mapped from error
    usage = usage_of(answer)
    limiter.report(request_id, usage.prompt_tokens, usage.completion_tokens)
    return answer
