"""Chat completion inside the completion quota: the older ``AzureOpenAIService`` methods as
plain functions (``chat_completion``, ``format_prompt``, ``send_prompt``, ``structured_prompt``).

Each call charges its estimate (prompt + ``max_tokens``, as Azure does) before it is sent and
reports the usage the answer states; see tasks/upstream.py. Errors are tasks.errors: a Celery
task (tasks/ai_tasks.py) turns them into retries or a clear failure.

With a worker's settings (the emulator, or Azure), in a Python shell::

    send_prompt("You are terse.", "Name a {thing}.", {"thing": "colour"}, max_tokens=20)
    # 'Blue.'
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from settings import get_settings
from tasks.errors import PermanentError
from tasks.prompts import Message, format_prompt, wire_messages
from tasks.token_estimates import estimate_tokens, text_tokens
from tasks.upstream import QuotaCall, Usage, call_within_quota

if TYPE_CHECKING:  # openai is heavy: imported where a request is sent, not by the bridge
    pass

__all__ = [
    "chat_completion",
    "estimate_tokens",
    "format_prompt",
    "send_prompt",
    "structured_prompt",
]

# The older service's defaults, so callers that relied on them see the same answers.
DEFAULT_TEMPERATURE = 0.7
DEFAULT_MAX_TOKENS = 800

ResponseModel = TypeVar("ResponseModel", bound=BaseModel)


def _usage(completion: Any) -> Usage:
    return Usage(completion.usage.prompt_tokens, completion.usage.completion_tokens)


def _create(
    messages: Sequence[Message],
    *,
    model: str | None,
    max_tokens: int,
    app_id: str | None,
    response_model: type[BaseModel] | None = None,
    **options: Any,
) -> Any:
    settings = get_settings()
    deployment = model or settings.openai_engine
    options = {name: value for name, value in options.items() if value is not None}
    estimate = estimate_tokens(messages, deployment, max_tokens)
    if response_model is None:

        def send(call: QuotaCall) -> Any:
            return call.client.chat.completions.with_raw_response.create(
                model=call.deployment,
                messages=wire_messages(messages),
                max_tokens=max_tokens,
                **options,
            )
    else:
        # The schema travels with the request and is charged as prompt.
        estimate += text_tokens([json.dumps(response_format_param(response_model))], deployment)[0]

        def send(call: QuotaCall) -> Any:
            return call.client.chat.completions.with_raw_response.parse(
                model=call.deployment,
                messages=wire_messages(messages),
                max_tokens=max_tokens,
                response_format=response_model,
                **options,
            )

    return call_within_quota(
        "completion",
        deployment,
        estimate,
        app_id=app_id or settings.app_name,
        send=send,
        usage_of=_usage,
    )


def response_format_param(response_model: type[BaseModel]) -> dict[str, Any]:
    """The ``response_format`` the SDK sends for ``response_model`` (a strict JSON schema named
    after the model), built with the SDK's public API: ``pydantic_function_tool`` makes the
    same strict schema ``completions.parse`` sends, so the estimate charges what goes out."""
    from openai import pydantic_function_tool  # noqa: PLC0415 - openai is heavy; bridge stays light

    schema = pydantic_function_tool(response_model)["function"]["parameters"]
    return {
        "type": "json_schema",
        "json_schema": {"schema": schema, "name": response_model.__name__, "strict": True},
    }


def chat_completion(  # noqa: PLR0917 - the older service's positional order
    messages: Sequence[Message],
    model: str | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    top_p: float | None = None,
    frequency_penalty: float | None = None,
    presence_penalty: float | None = None,
    stop: str | list[str] | None = None,
    *,
    app_id: str | None = None,
) -> dict[str, Any]:
    """One chat completion: ``{"content", "finish_reason", "model", "usage"}`` (JSON-safe, so a
    Celery task can return it). ``model`` is the deployment; unset, APP_OPENAI_ENGINE."""
    completion = _create(
        messages,
        model=model,
        max_tokens=max_tokens,
        app_id=app_id,
        temperature=temperature,
        top_p=top_p,
        frequency_penalty=frequency_penalty,
        presence_penalty=presence_penalty,
        stop=stop,
    )
    choice = completion.choices[0]
    return {
        "content": choice.message.content,
        "finish_reason": choice.finish_reason,
        "model": completion.model,
        "usage": {
            "prompt_tokens": completion.usage.prompt_tokens,
            "completion_tokens": completion.usage.completion_tokens,
            "total_tokens": completion.usage.total_tokens,
        },
    }


def send_prompt(  # noqa: PLR0917 - the older service's positional order
    system_prompt: str,
    user_prompt: str,
    variables: Mapping[str, Any] | None = None,
    examples: Sequence[Mapping[str, str]] | None = None,
    model: str | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    *,
    app_id: str | None = None,
) -> str:
    """Format the prompt, complete it, and return the answer's text."""
    messages = format_prompt(system_prompt, user_prompt, variables, examples)
    return chat_completion(messages, model, temperature, max_tokens, app_id=app_id)["content"]


def structured_prompt(  # noqa: PLR0917 - the older service's positional order
    system_prompt: str,
    user_prompt: str,
    response_model: type[ResponseModel],
    variables: Mapping[str, Any] | None = None,
    examples: Sequence[Mapping[str, str]] | None = None,
    model: str | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    *,
    app_id: str | None = None,
) -> ResponseModel:
    """Format the prompt and have the answer parsed into ``response_model`` (structured outputs:
    the model is held to the pydantic model's JSON schema)."""
    messages = format_prompt(system_prompt, user_prompt, variables, examples)
    completion = _create(
        messages,
        model=model,
        max_tokens=max_tokens,
        app_id=app_id,
        response_model=response_model,
        temperature=temperature,
    )
    message = completion.choices[0].message
    if message.parsed is None:
        raise PermanentError(
            f"the model declined to answer in {response_model.__name__}'s "
            f"shape: {message.refusal or 'no reason given'}"
        )
    return message.parsed
