"""MEDIA mode: ACS streams the caller's audio; we hear it (VAD + STT), answer (LLM) and speak
(TTS) on the same socket. See voice/handlers/base.py for the socket side."""

from __future__ import annotations

from voice.engines.base import Engines
from voice.handlers.base import CallHandler
from voice.pipeline import Stage
from voice.stages.hearing import HearingStage


class MediaHandler(CallHandler):
    mode = "MEDIA"

    def first_stage(self, engines: Engines) -> Stage:
        settings = self.settings
        return HearingStage(
            engines,
            start_secs=settings.vad_start_secs,
            stop_secs=settings.vad_stop_secs,
            max_utterance_secs=settings.voice_max_utterance_secs,
            on_speech_started=self.on_speech_started,
        )
