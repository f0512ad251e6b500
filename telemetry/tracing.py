"""OpenTelemetry tracing: one call per process sets it up, and only when it is configured.

    configure_tracing("conduit-worker")        # in each process, once, early
    with tracer.start_as_current_span("quota.acquire") as span: ...

Off (no ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``APPLICATIONINSIGHTS_CONNECTION_STRING`` or
``TRACING_CONSOLE``): no SDK is installed, ``tracer`` hands out non-recording spans from the
API's no-op provider, and no exporter thread starts. On: a ``TracerProvider`` for the service with
one batch processor per exporter, and Celery instrumented (Flask per app, with
:func:`instrument_flask`; Redis's commands too with ``TRACING_REDIS``, off by default for their
cost). Sampling follows a producer's decision when a trace is continued.

Processes that fork (gunicorn, Celery's prefork pool) must call this after the fork: a batch
processor's export thread does not survive one.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import AnyValue

from settings import Settings, get_logger, get_settings

log = get_logger(__name__)

# Every module's spans come from this one tracer; the API resolves the provider lazily, so it
# can be created at import time, before (or without) configure_tracing.
tracer = trace.get_tracer("conduit")
# Health probes and scrapes would be most of the spans and say nothing.
UNTRACED_URLS = "health,ready,metrics"


class _State:
    """The process's one tracer provider (None while tracing is off), guarded by ``lock``."""

    lock = threading.Lock()
    provider: Any = None


class NoLoneClientCalls(Sampler):
    """Samples the spans that start a trace: a client call outside any traced work (the bridge
    polling Redis every second, a probe of the upstream) starts none, or Redis's
    instrumentation alone would fill the exporter with one-span traces; the rest are kept at
    ``ratio``."""

    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)

    def should_sample(  # noqa: PLR0917 - the SDK's signature
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Mapping[str, AnyValue] | None = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if kind == SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return self._ratio.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"NoLoneClientCalls{{{self._ratio.get_description()}}}"


def _traces_url(endpoint: str) -> str:
    """OTLP/HTTP's signal path, appended to a base endpoint as the OTel spec says to."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


def configure_tracing(
    service_name: str,
    service_version: str | None = None,
    otlp_endpoint: str | None = None,
    *,
    settings: Settings | None = None,
) -> bool:
    """Set up tracing for this process if configured; True when spans are now exported.

    ``otlp_endpoint`` overrides ``OTEL_EXPORTER_OTLP_ENDPOINT``; ``OTEL_SERVICE_NAME`` overrides
    ``service_name``. Calling it again is harmless (the first set-up stays).
    """
    settings = settings or get_settings()
    endpoint = otlp_endpoint or settings.otlp_endpoint
    azure = settings.applicationinsights_connection_string
    if not (endpoint or azure or settings.tracing_console):
        return False
    with _State.lock:
        if _State.provider is not None:
            return True
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
        from opentelemetry.sdk.trace.sampling import ParentBased

        resource = Resource.create(
            {
                "service.name": settings.otel_service_name or service_name,
                "service.version": service_version or "unknown",
            }
        )
        provider = TracerProvider(
            resource=resource,
            sampler=ParentBased(root=NoLoneClientCalls(settings.tracing_sample_ratio)),
        )
        if endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=_traces_url(endpoint)))
            )
        if azure:
            from azure.monitor.opentelemetry.exporter import AzureMonitorTraceExporter

            exporter = AzureMonitorTraceExporter(connection_string=azure.get_secret_value())
            provider.add_span_processor(BatchSpanProcessor(exporter))
        if settings.tracing_console:
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        trace.set_tracer_provider(provider)
        _State.provider = provider
        _instrument_libraries(redis=settings.tracing_redis)
        atexit.register(shutdown_tracing)
    log.info(
        "tracing on for %s: %s",
        settings.otel_service_name or service_name,
        ", ".join(
            name
            for name, on in (
                ("OTLP " + _traces_url(endpoint) if endpoint else "", bool(endpoint)),
                ("Azure Monitor", bool(azure)),
                ("console", settings.tracing_console),
            )
            if on
        ),
    )
    return True


def _instrument_libraries(redis: bool) -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    CeleryInstrumentor().instrument()
    if redis:
        RedisInstrumentor().instrument()


def instrument_flask(app: Any) -> None:
    """Trace ``app``'s requests (not health checks or scrapes) when tracing is on."""
    if _State.provider is None:
        return
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor().instrument_app(app, excluded_urls=UNTRACED_URLS)


def tracing_enabled() -> bool:
    return _State.provider is not None


def shutdown_tracing() -> None:
    """Export what is buffered and stop the exporter threads (at exit, or a test's end)."""
    with _State.lock:
        provider, _State.provider = _State.provider, None
    if provider is not None:
        provider.shutdown()
