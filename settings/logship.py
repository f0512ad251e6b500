"""Settings of log shipping to Blob Storage (logship/): container, scan interval, upload retries.

Mixed into :class:`settings.config.Settings`; every field is read from the environment there.
"""

from __future__ import annotations

from pydantic import BaseModel


class LogShippingSettings(BaseModel):
    pass
