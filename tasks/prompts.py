"""Prompt building: templates with ``{name}`` variables and few-shot examples, into chat messages.

Only ``{identifier}`` is a placeholder, so JSON in a template (``{"score": 1}``) stays as written,
and values are inserted once, never re-read as templates, so braces in a value are safe.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from tasks.errors import InvalidInput

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

Message = dict[str, Any]


def fill_template(template: str, variables: Mapping[str, Any], where: str) -> str:
    """``template`` with each ``{name}`` replaced by ``variables[name]``; a missing name is an
    InvalidInput that names it and the prompt it is missing from."""
    missing = sorted({name for name in _PLACEHOLDER.findall(template) if name not in variables})
    if missing:
        raise InvalidInput(
            f"{where} uses variable(s) {', '.join(missing)} but `variables` has "
            f"no value for them (given: {', '.join(sorted(variables)) or 'none'})"
        )
    return _PLACEHOLDER.sub(lambda match: str(variables[match.group(1)]), template)


def format_prompt(
    system_prompt: str,
    user_prompt: str,
    variables: Mapping[str, Any] | None = None,
    examples: Sequence[Mapping[str, str]] | None = None,
) -> list[Message]:
    """Chat messages: the system prompt, each example as a user/assistant pair, then the user
    prompt; variables are filled into both prompts.

        >>> for message in format_prompt(
        ...     "You sort mail.",
        ...     "Sort: {subject}",
        ...     {"subject": "Invoice {42}"},
        ...     examples=[{"user": "Sort: Hi", "assistant": "personal"}],
        ... ):
        ...     print(message["role"], "|", message["content"])
        system | You sort mail.
        user | Sort: Hi
        assistant | personal
        user | Sort: Invoice {42}
    """
    variables = variables or {}
    messages: list[Message] = [
        {"role": "system", "content": fill_template(system_prompt, variables, "system_prompt")}
    ]
    for number, example in enumerate(examples or []):
        if not {"user", "assistant"} <= set(example):
            raise InvalidInput(
                f"examples[{number}] needs both 'user' and 'assistant' keys, got {sorted(example)}"
            )
        messages += [
            {"role": "user", "content": example["user"]},
            {"role": "assistant", "content": example["assistant"]},
        ]
    messages.append(
        {"role": "user", "content": fill_template(user_prompt, variables, "user_prompt")}
    )
    return messages


def wire_messages(messages: Sequence[Message]) -> list[ChatCompletionMessageParam]:
    """``messages`` as the SDK types them: a cast, not a conversion. format_prompt builds them
    in that shape; those a caller sends as JSON go out as they are, and Azure answers a wrong
    shape with a 400 (a PermanentError naming it)."""
    return cast("list[ChatCompletionMessageParam]", list(messages))
