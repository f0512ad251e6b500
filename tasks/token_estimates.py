"""How many tokens a request will be charged, counted before it is sent (tiktoken, offline).

The chat format wraps every message in a few tokens of its own and primes the reply with a few
more; the constants below are OpenAI's published figures for the gpt-3.5/4/4o families. Azure
charges a request its prompt plus ``max_tokens`` when it arrives, so that is the estimate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from settings.tiktoken_offline import encoding_for_model

TOKENS_PER_MESSAGE = 3  # <|start|>{role}\n ... <|end|>
TOKENS_PER_NAME = 1  # a message's optional "name" field
REPLY_PRIMING_TOKENS = 3  # <|start|>assistant<|message|>


def _counter(model: str) -> Callable[[str], int]:
    encoding = encoding_for_model(model)
    # User text may contain "<|endoftext|>": it is charged as text, so count it as text.
    return lambda text: len(encoding.encode(text, disallowed_special=()))


def _text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a multi-part content."""
    if isinstance(content, str):
        return content
    if isinstance(content, Iterable):
        return "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
    return ""


def prompt_tokens(messages: Sequence[Mapping[str, Any]], model: str) -> int:
    """Tokens the prompt of a chat request is charged."""
    count = _counter(model)
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += TOKENS_PER_MESSAGE + count(message.get("role", ""))
        total += count(_text_of(message.get("content")))
        if message.get("name"):
            total += TOKENS_PER_NAME + count(message["name"])
    return total


def estimate_tokens(messages: Sequence[Mapping[str, Any]], model: str, max_tokens: int) -> int:
    """Tokens a chat request is charged on arrival: its prompt plus the completion it may use."""
    return prompt_tokens(messages, model) + max_tokens


def text_tokens(texts: Sequence[str], model: str) -> list[int]:
    """Tokens of each text on its own (embedding inputs are charged exactly this)."""
    count = _counter(model)
    return [count(text) for text in texts]
