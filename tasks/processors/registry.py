"""The processors a route can name, and how a message becomes a Celery task for one.

A processor is a plain function from a validated input model to a result dict, wrapped as a
Celery task by :func:`tasks.processors.base.processor_task`. The bridge looks processors up here
by the name a route gives (``form_iq -> feedback -> form_oq``), validates the message body
against ``input_model`` before publishing, and publishes to the processor's own queue, so each
route's backlog can be measured (back-pressure) and its workers scaled apart.

Processor modules keep heavy imports (openai, librosa) inside functions: the bridge imports this
registry and must stay light.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from pydantic import BaseModel

# Fixed forever: task ids derived from it must stay stable across versions and machines.
TASK_ID_NAMESPACE = uuid.UUID("6f1c2b9e-4d0a-5b8e-9c3f-2a7d1e0b4c55")


class UnknownProcessor(LookupError):
    """A route names a processor that does not exist."""


@dataclass(frozen=True)
class Processor:
    name: str
    input_model: type[BaseModel]
    task_name: str

    @property
    def queue(self) -> str:
        """The Celery queue this processor's tasks wait in (worker.queue_names lists them)."""
        return self.name


PROCESSORS: dict[str, Processor] = {}


def register(processor: Processor) -> Processor:
    if processor.name in PROCESSORS:
        raise ValueError(f"processor {processor.name!r} is registered twice")
    PROCESSORS[processor.name] = processor
    return processor


def get_processor(name: str) -> Processor:
    try:
        return PROCESSORS[name]
    except KeyError:
        known = ", ".join(sorted(PROCESSORS)) or "none"
        raise UnknownProcessor(f"unknown processor {name!r} (known: {known})") from None


def task_id_for(in_queue: str, message_id: str) -> str:
    """The Celery task id for a Service Bus message: the same message always maps to the same id,
    so a redelivered message is recognised as work already done."""
    return str(uuid.uuid5(TASK_ID_NAMESPACE, f"{in_queue}/{message_id}"))
