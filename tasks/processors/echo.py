"""``echo``: answers every message with itself. For smoke tests and bridge benchmarks: the
whole path (bus, bridge, Celery, outbox, bus) with no AI work in the way."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from tasks.processors.base import processor_task


class EchoInput(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str | int


@processor_task("echo", EchoInput)
def echo(message: EchoInput) -> dict[str, Any]:
    return {**message.model_dump(), "message": "SUCCESS"}
