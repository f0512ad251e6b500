"""Settings of call control (voice/, web/): ACS Call Automation, Event Grid, sessions, Voice Live.

Mixed into :class:`settings.config.Settings`; every field is read from the environment there.
"""

from __future__ import annotations

from pydantic import BaseModel


class CallSettings(BaseModel):
    pass
