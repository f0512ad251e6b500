"""Speak the reply: each clause through the synthesiser, at the call's sample rate.

Clauses arrive one by one while the LLM is still writing, so the first one plays while later ones
render. An interruption stops between two chunks of a render, and what was rendered for the
interrupted turn is dropped by the pipeline.
"""

from __future__ import annotations

import logging

from voice.engines.base import EngineError, Synthesizer
from voice.frames import AudioMetadata, Frame, Interruption, LLMText, TTSAudio
from voice.latency import LatencyTool
from voice.pipeline import Stage

log = logging.getLogger("conduit.voice.speech")

DEFAULT_SAMPLE_RATE = 16000


class SpeechStage(Stage):
    name = "speech"

    def __init__(self, synthesizer: Synthesizer, latency: LatencyTool, call_id: str = "") -> None:
        super().__init__()
        self.synthesizer = synthesizer
        self.latency = latency
        self.call_id = call_id
        self.sample_rate = DEFAULT_SAMPLE_RATE
        self._clause = 0

    def process_frame(self, frame: Frame) -> None:
        if isinstance(frame, AudioMetadata):
            self.sample_rate = frame.sample_rate
            self.push(frame)
        elif isinstance(frame, LLMText):
            self._speak(frame)
        elif not isinstance(frame, Interruption):
            self.push(frame)

    def _speak(self, frame: LLMText) -> None:
        self._clause += 1
        try:
            for pcm in self.synthesizer.synthesize(frame.text, self.sample_rate):
                if self.interrupted:
                    return
                self.latency.mark(frame.turn, "tts_first_audio")
                self.push(TTSAudio(pcm, frame.text, frame.turn, self._clause))
        except EngineError as error:
            log.error("speech synthesis failed: %s", error, extra={"call_id": self.call_id})
        if frame.last:
            self.push(TTSAudio(b"", "", frame.turn, self._clause, last_of_turn=True))
