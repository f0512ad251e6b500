"""Settings of observability: OpenTelemetry traces (OTLP, Azure Monitor, console) and metrics.

Mixed into :class:`settings.config.Settings`; every field is read from the environment there.
"""

from __future__ import annotations

from pydantic import BaseModel


class TelemetrySettings(BaseModel):
    pass
