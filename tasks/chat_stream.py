"""A streamed chat completion inside the completion quota: the voice agent's LLM turn.

``stream_chat`` yields the answer's text as it is generated, so speech can start on the first
clause. It goes the way tasks/upstream.py describes (acquire the estimate, call the real openai
SDK, observe the rate-limit headers, report the usage or settle the lock, map errors onto
tasks.errors), adapted to a stream: usage arrives in the stream's last chunk
(``stream_options.include_usage``), and a stream the caller stops early (a barge-in) is closed at
once and reported with what was counted so far, since the upstream received it.

Voice turns are interactive traffic. The quota has no priority lanes yet; when it does
(``quota_call(..., lane="interactive")``), :func:`_quota_slot` is the one place to change.

With a completion endpoint (the emulator, or Azure) configured::

    for text in stream_chat(messages, max_tokens=80, app_id="voice"):
        speak(text)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from settings import get_logger, get_settings
from tasks.clients import completion_client
from tasks.connections import quota_limiter
from tasks.errors import PermanentError, QuotaExhausted
from tasks.prompts import Message
from tasks.token_estimates import estimate_tokens, prompt_tokens, text_tokens
from tasks.upstream import Usage, _as_conduit_error, _observe, _reached_upstream

log = get_logger(__name__)

# The lane voice turns are charged to once quota/ has lanes.
LANE = "interactive"


@contextmanager
def _quota_slot(deployment: str, estimate: int, app_id: str) -> Iterator[str]:
    """Acquire ``estimate`` tokens for one request; yields the lock's request id."""
    decision = quota_limiter().acquire("completion", deployment, estimate, app_id)
    reason = decision.reason or "the completion quota refused the request"
    if not decision.allowed:
        if decision.retry_after_s is None:
            raise PermanentError(reason)
        raise QuotaExhausted(reason, decision.retry_after_s)
    if decision.request_id is None:
        raise RuntimeError("the quota granted a request without a request id")
    yield decision.request_id


def _counted_usage(messages: Sequence[Message], deployment: str, written: list[str]) -> Usage:
    """What a stream cost when the upstream did not say (stopped early, or no usage chunk)."""
    return Usage(
        prompt_tokens(messages, deployment), text_tokens(["".join(written)], deployment)[0]
    )


def _failed(error: Exception, deployment: str) -> Exception:
    """The Conduit error for ``error``, after noting what the upstream said about its quota."""
    import openai

    if isinstance(error, openai.APIStatusError):
        _observe("completion", deployment, error.response.headers)
    return _as_conduit_error(error, "completion", deployment)


def stream_chat(
    messages: Sequence[Message],
    *,
    max_tokens: int,
    app_id: str,
    model: str | None = None,
    temperature: float | None = None,
) -> Iterator[str]:
    """The answer's text deltas, as the model writes them. Close the generator to stop early."""
    deployment = model or get_settings().openai_engine
    estimate = estimate_tokens(messages, deployment, max_tokens)
    # Any: the SDK's overloads cannot see that stream=True is a literal through **options.
    completions: Any = completion_client().chat.completions.with_raw_response
    limiter = quota_limiter()
    options: dict[str, Any] = {} if temperature is None else {"temperature": temperature}
    with _quota_slot(deployment, estimate, app_id) as request_id:
        stream = None
        written: list[str] = []
        usage: Usage | None = None
        try:
            response = completions.create(
                model=deployment,
                messages=list(messages),
                max_tokens=max_tokens,
                stream=True,
                stream_options={"include_usage": True},
                **options,
            )
            _observe("completion", deployment, response.headers)
            stream = response.parse()
            for chunk in stream:
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        written.append(choice.delta.content)
                        yield choice.delta.content
        except GeneratorExit:
            # Stopped early: the upstream has the request and counts what it generated.
            usage = _counted_usage(messages, deployment, written)
            raise
        except Exception as error:
            # A request the upstream received is charged even though it failed.
            usage = Usage(0, 0) if _reached_upstream(error) else None
            if usage is None:
                limiter.release(request_id)
            mapped = _failed(error, deployment)
            if mapped is error:
                raise
            raise mapped from error
        else:
            usage = usage or _counted_usage(messages, deployment, written)
        finally:
            if stream is not None:
                stream.close()
            if usage is not None:
                limiter.report(request_id, usage.prompt_tokens, usage.completion_tokens)
