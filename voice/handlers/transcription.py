"""TRANSCRIPTION mode: ACS transcribes the caller and sends text; we answer (LLM → TTS) with
AudioData on the same socket. Intermediate results barge in; finals end the turn."""

from __future__ import annotations

from voice.engines.base import Engines
from voice.frames import Frame, TranscriptionIn
from voice.handlers.base import CallHandler
from voice.pipeline import Stage
from voice.stages.transcription import TranscriptionStage


class TranscriptionHandler(CallHandler):
    mode = "TRANSCRIPTION"

    def first_stage(self, engines: Engines) -> Stage:
        return TranscriptionStage(on_speech_started=self.on_speech_started)

    def accepts(self, frame: Frame) -> bool:
        # Audio, if ACS sends any alongside, is not heard in this mode.
        return isinstance(frame, TranscriptionIn) or super().accepts(frame)
