"""Chat completions: a deterministic answer for every request, in OpenAI's response shapes.

The same request always gets the same answer: every choice is drawn from a random source seeded
with a hash of the messages, the deployment, ``seed``, the tools and the response format. With
``temperature`` 0 all ``n`` choices are identical (greedy decoding would be); above 0 each
choice gets its own draw. The words are a mix of the last user message and filler, enough to
exercise parsing, truncation and stop sequences; they mean nothing.

* ``response_format`` ``json_object`` → a JSON object; ``json_schema`` → a value valid for the
  schema (:mod:`emulators.jsonschema_fill`), so ``client.chat.completions.parse`` works.
* ``tools`` → one tool call with schema-valid arguments when ``tool_choice`` is ``required`` or
  names a function, and under ``auto`` when the conversation ends with a user message (after a
  tool result the model answers in text, so agent loops end).
* ``max_tokens``/``max_completion_tokens`` cut the answer (``finish_reason`` "length");
  ``stop`` cuts it before the first stop sequence.
* ``usage`` is counted with tiktoken the way OpenAI documents for chat messages.

No I/O: the web layer (app.py) paces and sends what this module builds.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from emulators.errors import BadRequest
from emulators.jsonschema_fill import SchemaFillError, fill
from settings.tiktoken_offline import encoding_for_model

# Without max_tokens an answer is at most this long, and Azure's estimate assumes as much.
DEFAULT_MAX_ANSWER_TOKENS = 256
MAX_CHOICES = 128
MAX_STOP_SEQUENCES = 4
# OpenAI's documented chat overhead: tokens per message and to prime the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
# What an image part costs at "low" detail; the emulator does not look at images.
IMAGE_PART_TOKENS = 85
_FILLER = (
    "the of and to in that it is was for on are with as be at this have from or by one had "
    "not but what all were when we there can an your which their said if do will each about "
    "how up out them then she many some so these would other into has more her two like him "
    "see time could no make than first been its who now people my made over did down only way "
    "find use may water long little very after words called just where most know"
).split()


@dataclass(frozen=True)
class ChatRequest:
    deployment: str
    messages: list[dict[str, Any]]
    n: int = 1
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    temperature: float = 1.0
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None

    @classmethod
    def from_body(cls, deployment: str, body: dict[str, Any]) -> ChatRequest:
        """Validate a request body as the API does; BadRequest names the parameter at fault."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty array", "messages")
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message:
                raise BadRequest(
                    f"messages[{index}] must be an object with a 'role'", f"messages.[{index}]"
                )
        stop = body.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        if len(stop) > MAX_STOP_SEQUENCES:
            raise BadRequest(f"'stop' takes at most {MAX_STOP_SEQUENCES} sequences", "stop")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise BadRequest("'max_tokens' must be a positive integer", "max_tokens")
        n = body.get("n") or 1
        if not isinstance(n, int) or not 1 <= n <= MAX_CHOICES:
            raise BadRequest(f"'n' must be an integer from 1 to {MAX_CHOICES}", "n")
        temperature = body.get("temperature")
        if temperature is not None and not (
            isinstance(temperature, int | float) and 0 <= temperature <= 2
        ):
            raise BadRequest("'temperature' must be a number from 0 to 2", "temperature")
        tools = body.get("tools") or []
        if not isinstance(tools, list) or not all(
            isinstance(tool, dict)
            and isinstance(tool.get("function"), dict)
            and tool["function"].get("name")
            for tool in tools
        ):
            raise BadRequest(
                "each tool must be {'type': 'function', 'function': {'name': ...}}", "tools"
            )
        return cls(
            deployment=deployment,
            messages=messages,
            n=n,
            max_tokens=max_tokens,
            stop=stop,
            temperature=1.0 if temperature is None else float(temperature),
            seed=body.get("seed"),
            stream=bool(body.get("stream")),
            include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
            response_format=body.get("response_format"),
            tools=tools,
            tool_choice=body.get("tool_choice"),
        )


@dataclass(frozen=True)
class Choice:
    index: int
    content: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str
    completion_tokens: int


# --- token accounting ----------------------------------------------------------------------------


def _count(deployment: str, text: str) -> int:
    return len(encoding_for_model(deployment).encode(text, disallowed_special=()))


def _content_tokens(deployment: str, content: Any) -> int:
    if isinstance(content, str):
        return _count(deployment, content)
    if isinstance(content, list):  # content parts: text and images
        return sum(
            _count(deployment, part.get("text", ""))
            if part.get("type") == "text"
            else IMAGE_PART_TOKENS
            for part in content
            if isinstance(part, dict)
        )
    return 0


def prompt_tokens(request: ChatRequest) -> int:
    """Prompt tokens as OpenAI counts them; tool and schema definitions count as prompt."""
    total = REPLY_PRIMING_TOKENS
    for message in request.messages:
        total += TOKENS_PER_MESSAGE + _count(request.deployment, str(message["role"]))
        total += _content_tokens(request.deployment, message.get("content"))
        if message.get("name"):
            total += TOKENS_PER_NAME + _count(request.deployment, str(message["name"]))
        if message.get("tool_calls"):
            total += _count(request.deployment, json.dumps(message["tool_calls"]))
    if request.tools:
        total += _count(request.deployment, json.dumps(request.tools))
    if request.response_format and request.response_format.get("type") == "json_schema":
        total += _count(request.deployment, json.dumps(request.response_format))
    return total


def charge_estimate(request: ChatRequest) -> int:
    """What Azure charges at arrival: the prompt plus the most every choice may write."""
    return prompt_tokens(request) + (request.max_tokens or DEFAULT_MAX_ANSWER_TOKENS) * request.n


# --- answers -------------------------------------------------------------------------------------


def _random_for(request: ChatRequest, choice_index: int) -> random.Random:
    # Greedy decoding (temperature 0) gives every choice the same answer.
    varies = request.temperature > 0
    key = json.dumps(
        [
            request.deployment,
            request.messages,
            request.seed,
            request.tools,
            request.response_format,
            choice_index if varies else 0,
        ],
        sort_keys=True,
        default=str,
    )
    return random.Random(hashlib.sha256(key.encode()).digest())


def _last_user_words(request: ChatRequest) -> list[str]:
    for message in reversed(request.messages):
        if message["role"] == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(
                    part.get("text", "") for part in content if isinstance(part, dict)
                )
            return re.findall(r"[A-Za-z']+", str(content or ""))
    return []


def _prose(request: ChatRequest, rng: random.Random) -> str:
    prompt_words = _last_user_words(request)
    sentences = []
    for _ in range(rng.randint(2, 4)):
        words = [
            rng.choice(prompt_words) if prompt_words and rng.random() < 0.4 else rng.choice(_FILLER)
            for _ in range(rng.randint(6, 14))
        ]
        sentence = " ".join(words)
        sentences.append(sentence[:1].upper() + sentence[1:] + ".")
    return " ".join(sentences)


def _json_text(request: ChatRequest, rng: random.Random) -> str:
    response_format = request.response_format or {}
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        try:
            return json.dumps(fill(schema, rng))
        except SchemaFillError as error:
            raise BadRequest(
                f"Invalid schema for response_format: {error}", "response_format"
            ) from None
    return json.dumps({"answer": _prose(request, rng), "keywords": _last_user_words(request)[:5]})


def _called_tool(request: ChatRequest) -> dict[str, Any] | None:
    """The tool the model calls, or None when it answers in text."""
    choice = request.tool_choice
    if not request.tools or choice == "none":
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        for tool in request.tools:
            if tool["function"]["name"] == name:
                return tool
        raise BadRequest(f"tool_choice names {name!r}, which is not in 'tools'", "tool_choice")
    if choice == "required" or request.messages[-1]["role"] == "user":
        return request.tools[0]
    return None


def _tool_call(tool: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    parameters = tool["function"].get("parameters") or {"type": "object", "properties": {}}
    try:
        arguments = fill(parameters, rng)
    except SchemaFillError as error:
        raise BadRequest(
            f"Invalid schema for function {tool['function']['name']!r}: {error}", "tools"
        ) from None
    return {
        "id": f"call_{rng.getrandbits(96):024x}",
        "type": "function",
        "function": {"name": tool["function"]["name"], "arguments": json.dumps(arguments)},
    }


def _cut(request: ChatRequest, text: str) -> tuple[str, str]:
    """Apply stop sequences, then max_tokens: (text, finish_reason)."""
    finish_reason = "stop"
    positions = [text.find(stop) for stop in request.stop if stop and stop in text]
    if positions:
        text = text[: min(positions)]
    limit = request.max_tokens or DEFAULT_MAX_ANSWER_TOKENS
    encoding = encoding_for_model(request.deployment)
    tokens = encoding.encode(text, disallowed_special=())
    if len(tokens) > limit:
        text, finish_reason = encoding.decode(tokens[:limit]), "length"
    return text, finish_reason


def complete(request: ChatRequest) -> list[Choice]:
    choices = []
    tool = _called_tool(request)
    for index in range(request.n):
        rng = _random_for(request, index)
        if tool is not None:
            call = _tool_call(tool, rng)
            tokens = _count(
                request.deployment, call["function"]["name"] + call["function"]["arguments"]
            )
            choices.append(Choice(index, None, [call], "tool_calls", tokens))
            continue
        wants_json = (request.response_format or {}).get("type") in {"json_object", "json_schema"}
        text = _json_text(request, rng) if wants_json else _prose(request, rng)
        text, finish_reason = _cut(request, text)
        choices.append(Choice(index, text, [], finish_reason, _count(request.deployment, text)))
    return choices


# --- response shapes -----------------------------------------------------------------------------


def _usage(request: ChatRequest, choices: list[Choice]) -> dict[str, Any]:
    prompt = prompt_tokens(request)
    completion = sum(choice.completion_tokens for choice in choices)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def content_filter_results() -> dict[str, Any]:
    """Azure's per-prompt and per-choice annotation: every category passes."""
    safe = {"filtered": False, "severity": "safe"}
    return {"hate": safe, "self_harm": safe, "sexual": safe, "violence": safe}


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:29]}"


def completion_body(request: ChatRequest, choices: list[Choice], azure: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": new_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.deployment,
        "system_fingerprint": "fp_emulator",
        "choices": [
            {
                "index": choice.index,
                "message": {
                    "role": "assistant",
                    "content": choice.content,
                    "refusal": None,
                    **({"tool_calls": choice.tool_calls} if choice.tool_calls else {}),
                },
                "logprobs": None,
                "finish_reason": choice.finish_reason,
                **({"content_filter_results": content_filter_results()} if azure else {}),
            }
            for choice in choices
        ],
        "usage": _usage(request, choices),
    }
    if azure:
        body["prompt_filter_results"] = [
            {"prompt_index": 0, "content_filter_results": content_filter_results()}
        ]
    return body


@dataclass(frozen=True)
class StreamChunk:
    body: dict[str, Any]
    tokens: int  # completion tokens this chunk carries, for pacing


def stream_chunks(
    request: ChatRequest, choices: list[Choice], azure: bool
) -> Iterator[StreamChunk]:
    """The ``chat.completion.chunk`` objects of a streamed answer, in the order sent."""
    completion_id, created = new_completion_id(), int(time.time())
    encoding = encoding_for_model(request.deployment)

    def chunk(choice_list: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": request.deployment,
            "system_fingerprint": "fp_emulator",
            "choices": choice_list,
            **extra,
        }
        if request.include_usage and "usage" not in body:
            body["usage"] = None
        return body

    def delta(index: int, content: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": index, "delta": content, "logprobs": None, "finish_reason": finish}

    if azure:
        # Azure opens every stream with the prompt's content-filter verdict and no choices.
        verdict = {"prompt_index": 0, "content_filter_results": content_filter_results()}
        yield StreamChunk(
            {
                "id": "",
                "object": "",
                "created": 0,
                "model": "",
                "choices": [],
                "prompt_filter_results": [verdict],
            },
            0,
        )
    for choice in choices:
        opening = {
            "role": "assistant",
            "refusal": None,
            "content": None if choice.content is None else "",
        }
        yield StreamChunk(chunk([delta(choice.index, opening)]), 0)
        for call in choice.tool_calls:
            head = {
                "index": 0,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            yield StreamChunk(chunk([delta(choice.index, {"tool_calls": [head]})]), 1)
            for piece in _token_pieces(encoding, call["function"]["arguments"]):
                yield StreamChunk(
                    chunk(
                        [
                            delta(
                                choice.index,
                                {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]},
                            )
                        ]
                    ),
                    1,
                )
        for piece in _token_pieces(encoding, choice.content or ""):
            yield StreamChunk(chunk([delta(choice.index, {"content": piece})]), 1)
        yield StreamChunk(chunk([delta(choice.index, {}, choice.finish_reason)]), 0)
    if request.include_usage:
        yield StreamChunk(chunk([], usage=_usage(request, choices)), 0)


def _token_pieces(encoding: Any, text: str) -> Iterator[str]:
    """The text one token at a time, as the model streams it (multi-byte characters kept whole)."""
    pending: list[int] = []
    for token in encoding.encode(text, disallowed_special=()):
        pending.append(token)
        piece = encoding.decode(pending)
        if "\ufffd" not in piece:
            yield piece
            pending = []
    if pending:
        yield encoding.decode(pending)
