"""A trace's context in the places a message travels: Service Bus properties and the outbox.

W3C Trace Context (``traceparent``, and ``tracestate`` when present) through the globally
configured propagator, so a producer that put a ``traceparent`` on its Service Bus message sees
Conduit's spans in its own trace, and the result sent back carries the context onward.
Celery's own headers are handled by opentelemetry-instrumentation-celery.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import propagate
from opentelemetry.context import Context

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"


def _text(value: Any) -> str:
    # azure-servicebus hands application properties back as bytes.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def context_from_carrier(carrier: Mapping[Any, Any] | None) -> Context | None:
    """The trace context a message's properties (or an outbox entry) carry; None if none."""
    if not carrier:
        return None
    fields = {
        _text(key).lower(): _text(value)
        for key, value in carrier.items()
        if _text(key).lower() in (TRACEPARENT, TRACESTATE)
    }
    if TRACEPARENT not in fields:
        return None
    return propagate.extract(fields)


def current_carrier() -> dict[str, str]:
    """The current span's context as properties to attach (empty when no span is recording)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier
