"""Observability for every Conduit process: OpenTelemetry traces and fleet-wide metrics.

- :mod:`telemetry.tracing`: ``configure_tracing`` (the older voice agent's name), off unless an
  exporter is configured (OTLP, Azure Monitor or the console), and the ``tracer`` every module
  starts its spans from.
- :mod:`telemetry.propagation`: a trace's context carried in Service Bus application
  properties and outbox entries (``traceparent``), so one message is one trace across processes.
- :mod:`telemetry.fleet_metrics`: counters and histograms kept in Redis, so ``/metrics`` on any
  web replica shows the whole fleet.

It sits beside quota/ in the layering and imports only settings.
"""

from telemetry.propagation import TRACEPARENT, context_from_carrier, current_carrier
from telemetry.tracing import configure_tracing, instrument_flask, shutdown_tracing, tracer

__all__ = [
    "TRACEPARENT",
    "configure_tracing",
    "context_from_carrier",
    "current_carrier",
    "instrument_flask",
    "shutdown_tracing",
    "tracer",
]
