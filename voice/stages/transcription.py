"""Hear the caller through ACS's own transcription (TRANSCRIPTION mode).

ACS sends text instead of audio: an intermediate result means the caller is speaking (the handler
may barge in), a final one ends the turn. ACS's offsets are relative to the call's start on its
clock, not ours, so the end of speech is taken as the final's arrival.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from voice.frames import (
    AudioIn,
    AudioMetadata,
    EndOfTurn,
    Frame,
    Interruption,
    TranscriptionIn,
    TranscriptionMetadata,
)
from voice.pipeline import Stage

# No AudioMetadata comes in this mode; the agent speaks 16 kHz PCM, ACS's default format.
OUTBOUND_SAMPLE_RATE = 16000


class TranscriptionStage(Stage):
    name = "transcription"
    interruptible = False

    def __init__(self, *, on_speech_started: Callable[[float], None]) -> None:
        super().__init__()
        self.on_speech_started = on_speech_started
        self._in_utterance = False
        self._announced_rate = False

    def process_frame(self, frame: Frame) -> None:
        if not self._announced_rate:
            self._announced_rate = True
            if not isinstance(frame, AudioMetadata):
                self.push(AudioMetadata(sample_rate=OUTBOUND_SAMPLE_RATE))
        if isinstance(frame, TranscriptionIn):
            self._heard(frame)
        elif isinstance(frame, TranscriptionMetadata | AudioIn | Interruption):
            return  # audio is not ours to hear in this mode
        else:
            self.push(frame)

    def _heard(self, frame: TranscriptionIn) -> None:
        now = time.monotonic()
        if not frame.final:
            if not self._in_utterance and frame.text.strip():
                self._in_utterance = True
                self.on_speech_started(now)
            return
        if not self._in_utterance and frame.text.strip():
            self.on_speech_started(now)
        self._in_utterance = False
        if frame.text.strip():
            self.push(EndOfTurn(frame.text.strip(), now, now))
