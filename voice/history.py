"""One conversation's history and context, in memory, bounded by tokens.

The interface MemoManager (Redis, call control) also has, so a handler takes either:
``append_to_history(role, text)``, ``history``, ``set_context(key, value)``, ``get_context(key)``,
and :meth:`messages`, what the LLM is sent: the system prompt, then as many of the latest turns
as fit in ``max_tokens`` (oldest dropped first; the newest message always stays).

    >>> memory = ConversationHistory(max_tokens=2000)
    >>> memory.append_to_history("user", "what is the weather today")
    >>> memory.messages("You are a phone agent.")  # doctest: +NORMALIZE_WHITESPACE
    [{'role': 'system', 'content': 'You are a phone agent.'},
     {'role': 'user', 'content': 'what is the weather today'}]
"""

from __future__ import annotations

import threading
from typing import Any, Literal, Protocol

from tasks.token_estimates import text_tokens

Role = Literal["user", "assistant", "system"]
# Chat format overhead per message (OpenAI's documented count).
TOKENS_PER_MESSAGE = 4
# A conversation keeps at most this many messages whatever their size (bounded memory).
MAX_MESSAGES = 200


class ConversationMemory(Protocol):
    """What the voice handlers need of a conversation store."""

    def append_to_history(self, role: Role, text: str) -> None: ...

    @property
    def history(self) -> list[dict[str, str]]: ...

    def set_context(self, key: str, value: Any) -> None: ...

    def get_context(self, key: str, default: Any = None) -> Any: ...

    def messages(self, system_prompt: str) -> list[dict[str, str]]: ...


class ConversationHistory:
    """In-process memory of one call (thread-safe)."""

    def __init__(self, max_tokens: int = 2000, model: str = "gpt-4o") -> None:
        self.max_tokens = max_tokens
        self.model = model
        self._history: list[dict[str, str]] = []
        self._tokens: list[int] = []
        self._context: dict[str, Any] = {}
        self._lock = threading.Lock()

    def append_to_history(self, role: Role, text: str) -> None:
        text = text.strip()
        if not text:
            return
        cost = text_tokens([text], self.model)[0] + TOKENS_PER_MESSAGE
        with self._lock:
            self._history.append({"role": role, "content": text})
            self._tokens.append(cost)
            if len(self._history) > MAX_MESSAGES:
                del self._history[0], self._tokens[0]

    @property
    def history(self) -> list[dict[str, str]]:
        with self._lock:
            return [dict(message) for message in self._history]

    def set_context(self, key: str, value: Any) -> None:
        with self._lock:
            self._context[key] = value

    def get_context(self, key: str, default: Any = None) -> Any:
        with self._lock:
            return self._context.get(key, default)

    def messages(self, system_prompt: str) -> list[dict[str, str]]:
        budget = self.max_tokens - text_tokens([system_prompt], self.model)[0] - TOKENS_PER_MESSAGE
        with self._lock:
            kept: list[dict[str, str]] = []
            for message, cost in zip(reversed(self._history), reversed(self._tokens), strict=True):
                if kept and cost > budget:
                    break
                kept.append(dict(message))
                budget -= cost
        return [{"role": "system", "content": system_prompt}, *reversed(kept)]
