"""Settings of observability: OpenTelemetry traces (OTLP, Azure Monitor, console) and metrics.

Mixed into :class:`settings.config.Settings`; every field is read from the environment there.
Tracing is off unless one exporter is configured: then no SDK is set up and no exporter thread
runs, so it costs nothing.
"""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, Field, SecretStr


class TelemetrySettings(BaseModel):
    # OTLP over http/protobuf, e.g. http://otel-collector:4318 (the standard variable's name);
    # spans go to <endpoint>/v1/traces.
    otlp_endpoint: str | None = Field(
        None, validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    # Azure Monitor (Application Insights); may be set together with the OTLP endpoint.
    applicationinsights_connection_string: SecretStr | None = Field(
        None, validation_alias=AliasChoices("APPLICATIONINSIGHTS_CONNECTION_STRING")
    )
    # Spans printed to stdout: for a developer looking at one process, never for production.
    tracing_console: bool = Field(False, validation_alias=AliasChoices("TRACING_CONSOLE"))
    # Unset: each process names itself (conduit-web, conduit-worker, conduit-bridge).
    otel_service_name: str | None = Field(None, validation_alias=AliasChoices("OTEL_SERVICE_NAME"))
    # A span per Redis command inside traced work: what each message did to Redis. Off by
    # default for its cost: Redis calls are most of a message's spans, and bench.bridge_throughput
    # measured tracing costing 32 % of end-to-end throughput with them, 13 % without.
    tracing_redis: bool = Field(False, validation_alias=AliasChoices("TRACING_REDIS"))
    # Fraction of new traces kept (a trace continued from a producer keeps its parent's choice).
    tracing_sample_ratio: float = Field(
        1.0, ge=0, le=1, validation_alias=AliasChoices("TRACING_SAMPLE_RATIO")
    )

    @property
    def tracing_enabled(self) -> bool:
        return bool(
            self.otlp_endpoint or self.applicationinsights_connection_string or self.tracing_console
        )
