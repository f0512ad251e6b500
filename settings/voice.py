"""Settings of the voice agent's media path (voice/): streaming mode, speech engines, VAD, limits.

Mixed into :class:`settings.config.Settings`; every field is read from the environment there.
"""

from __future__ import annotations

from pydantic import BaseModel


class VoiceSettings(BaseModel):
    pass
