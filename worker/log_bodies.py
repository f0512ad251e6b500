"""Message bodies out of a worker's log: Celery logs them in several of its own lines.

- The task lines ("Task x[id] received", "... succeeded in 0.01s: <return value>", failures,
  retries) carry the task's ``args``, ``kwargs`` and ``return_value`` (a message, a transcript)
  in their format arguments and again in their ``data`` field.
- The consumer's complaints about a message it cannot run (unregistered task, invalid message,
  undecodable body, unknown format) quote the whole body, headers and delivery info.

:class:`CeleryBodyFilter` replaces each of these with its size, so every line still says which
task (name and id) or which error it is about. It is installed on the worker's handlers by
worker/celery_app.py, before the secret filter, which then masks what is left.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from celery.worker.consumer.consumer import (
    INVALID_TASK_ERROR,
    MESSAGE_DECODE_ERROR,
    UNKNOWN_FORMAT,
    UNKNOWN_TASK_ERROR,
)

# The fields of Celery's task lines that hold a task's arguments or result.
BODY_FIELDS = frozenset({"args", "kwargs", "return_value"})
# Consumer lines quoting a message: how many of their leading arguments are safe to keep (the
# task's name, or the error and the content type); the rest are the message and become sizes.
KEPT_LEADING_ARGS = {
    UNKNOWN_FORMAT: 0,
    UNKNOWN_TASK_ERROR: 1,
    INVALID_TASK_ERROR: 1,
    MESSAGE_DECODE_ERROR: 3,
}


def size_of(value: object) -> str:
    """What a log line says instead of a body: how big it is."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    text = text if isinstance(text, str) else repr(text)
    return f"<{len(text)} chars>"


class CeleryBodyFilter(logging.Filter):
    """Replaces message bodies in Celery's log records with their sizes (see the module)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("celery"):
            return True
        if isinstance(record.args, Mapping) and not BODY_FIELDS.isdisjoint(record.args):
            summary = {
                key: size_of(value) if key in BODY_FIELDS else value
                for key, value in record.args.items()
            }
            record.args = summary
            if isinstance(getattr(record, "data", None), Mapping):
                record.data = summary  # the same fields again, as the `data` extra
        elif isinstance(record.msg, str) and isinstance(record.args, tuple):
            kept = KEPT_LEADING_ARGS.get(record.msg)
            if kept is not None:
                record.args = (
                    *record.args[:kept],
                    *(size_of(value) for value in record.args[kept:]),
                )
        return True
