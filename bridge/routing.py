"""From a received message to the Celery task that will handle it, or the reason it cannot be.

No I/O here: the ingress publishes a :class:`TaskRequest` or dead-letters the message with a
:class:`Rejection`, whose reason and description Service Bus shows in the dead-letter queue.
A rejected message is one that no redelivery could fix, so it must not wait for its retries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from bridge.bus_api import ReceivedMessage
from settings import Route
from settings.jsonsafe import JsonRejected, loads_bounded
from tasks.processors import UnknownProcessor, get_processor, task_id_for

# Service Bus caps a dead-letter description at 4096 characters; a reader needs far fewer.
MAX_DESCRIPTION_CHARS = 1000


@dataclass(frozen=True)
class TaskRequest:
    """One Celery task to publish: ``task(body, out_queue=..., message_id=...)``."""

    task_name: str
    queue: str
    task_id: str
    body: dict[str, Any]
    out_queue: str
    message_id: str


@dataclass(frozen=True)
class Rejection:
    """Why a message is dead-lettered: a reason code and a one-line description."""

    reason: str
    description: str


def one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_DESCRIPTION_CHARS]


def describe_invalid_fields(error: ValidationError) -> str:
    """``field 'id': Field required; field 'language': ...`` — every field at fault, one line."""
    problems = [
        f"field {'.'.join(str(p) for p in item['loc']) or 'body'!r}: {item['msg']}"
        for item in error.errors()
    ]
    return one_line("; ".join(problems))


# Which setting bounds what, for the dead-letter description.
_BOUND_SETTING = {"too_large": "BRIDGE_MAX_MESSAGE_BYTES", "too_deep": "BRIDGE_MAX_JSON_DEPTH"}


def unhandled(error: BaseException, doing: str) -> Rejection:
    """The dead letter for a message that made the bridge itself fail (a bug, or input no check
    foresaw): it goes to the dead-letter queue alone, so the rest of its batch goes through."""
    return Rejection("UnhandledError", one_line(f"{type(error).__name__} while {doing}: {error}"))


def route_message(
    route: Route, message: ReceivedMessage, *, max_bytes: int, max_depth: int
) -> TaskRequest | Rejection:
    """The task for ``message``, or why it has none. The body is bounded in size and nesting
    (settings/jsonsafe.py) before it is parsed: everything after this walks it recursively."""
    try:
        processor = get_processor(route.processor)
    except UnknownProcessor as error:
        return Rejection("UnknownProcessor", one_line(f"route {route.in_queue}: {error}"))
    if message.unreadable:
        return Rejection("MalformedJson", one_line(f"body {message.unreadable}"))
    try:
        body = loads_bounded(message.body, max_bytes=max_bytes, max_depth=max_depth)
    except JsonRejected as error:
        setting = _BOUND_SETTING.get(error.kind)
        reason = "MessageTooLarge" if error.kind == "too_large" else "MalformedJson"
        return Rejection(reason, one_line(f"{error} ({setting})" if setting else str(error)))
    if not isinstance(body, dict):
        return Rejection("MalformedJson", f"body must be a JSON object, not {type(body).__name__}")
    try:
        processor.input_model.model_validate(body)
    except ValidationError as error:
        return Rejection("InvalidFields", describe_invalid_fields(error))
    return TaskRequest(
        task_name=processor.task_name,
        queue=processor.queue,
        task_id=task_id_for(route.in_queue, message.message_id),
        body=body,
        out_queue=route.out_queue,
        message_id=message.message_id,
    )
