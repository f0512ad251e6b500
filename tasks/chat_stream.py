"""A streamed chat completion inside the completion quota: the voice agent's LLM turn.

``stream_chat`` yields the answer's text as it is generated, so speech can start on the first
clause. It goes through :func:`tasks.upstream.quota_call` like every other request (acquire,
send to the deployment quota chose, observe the rate-limit headers, report or settle, errors
made ours) in the ``interactive`` lane, so a caller never waits behind batch work. Usage arrives
in the stream's last chunk (``stream_options.include_usage``); a stream the caller stops early
(a barge-in) is closed at once and reported with what was counted so far, since the upstream
received it.

With a completion endpoint (the emulator, or Azure) configured::

    for text in stream_chat(messages, max_tokens=80, app_id="voice"):
        speak(text)
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from settings import get_settings
from tasks.prompts import Message, wire_messages
from tasks.token_estimates import estimate_tokens, prompt_tokens, text_tokens
from tasks.upstream import QuotaCall, quota_call

# Voice turns are what the interactive lane is for: quota keeps its reserve for them.
LANE = "interactive"


def _report_counted(call: QuotaCall, messages: Sequence[Message], written: list[str]) -> None:
    """Report what a stream cost when the upstream did not say (stopped early, no usage chunk)."""
    deployment = call.deployment
    call.report(prompt_tokens(messages, deployment), text_tokens(["".join(written)], deployment)[0])


def stream_chat(
    messages: Sequence[Message],
    *,
    max_tokens: int,
    app_id: str,
    model: str | None = None,
    temperature: float | None = None,
) -> Generator[str, None, None]:
    """The answer's text deltas, as the model writes them. Close the generator to stop early."""
    model = model or get_settings().openai_engine
    estimate = estimate_tokens(messages, model, max_tokens)
    options: dict[str, Any] = {} if temperature is None else {"temperature": temperature}
    with quota_call("completion", model, estimate, app_id=app_id, lane=LANE) as call:
        written: list[str] = []
        stream = None
        try:
            call.sending()
            # Any: the SDK's overloads cannot see that stream=True is a literal through **options.
            completions: Any = call.client.chat.completions.with_raw_response
            response = completions.create(
                model=call.deployment,
                messages=wire_messages(messages),
                max_tokens=max_tokens,
                stream=True,
                stream_options={"include_usage": True},
                **options,
            )
            call.observe(response.headers)
            stream = response.parse()
            for chunk in stream:
                if chunk.usage is not None:
                    call.report(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        written.append(choice.delta.content)
                        yield choice.delta.content
        except GeneratorExit:
            # Stopped early: the upstream has the request and counts what it generated.
            _report_counted(call, messages, written)
            raise
        finally:
            if stream is not None:
                stream.close()
        if not call.settled:
            _report_counted(call, messages, written)
