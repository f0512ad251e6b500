"""Speak the reply: each clause through the synthesiser, at the call's sample rate.

Clauses arrive one by one while the LLM is still writing, so the first one plays while later ones
render. A reply's first clause renders at once; later ones just in time, when less than
:data:`RENDER_AHEAD_SECS` of the reply is left to play: every call's first words then wait less for
the synthesiser (espeak-ng renders one clause at a time per process), and a reply cut short by a
barge-in was never rendered in full. An interruption stops between two chunks of a render, and
what was rendered for the interrupted turn is dropped by the pipeline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from voice.engines.base import EngineError, Synthesizer
from voice.frames import AudioMetadata, Frame, Interruption, LLMText, TTSAudio
from voice.latency import LatencyTool
from voice.pipeline import Stage

log = logging.getLogger("conduit.voice.speech")

DEFAULT_SAMPLE_RATE = 16000
# Later clauses render when less than this is left to play: far more than a clause takes to
# render on a busy machine (tens of ms; ~0.5 s when 25 calls queue for espeak-ng).
RENDER_AHEAD_SECS = 1.5
# How often a clause waiting for its turn looks again.
RENDER_POLL_SECS = 0.02


class SpeechStage(Stage):
    name = "speech"

    def __init__(
        self,
        synthesizer: Synthesizer,
        latency: LatencyTool,
        call_id: str = "",
        *,
        buffered_secs: Callable[[], float] | None = None,
    ) -> None:
        super().__init__()
        self.buffered_secs = buffered_secs
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
        if not frame.first and self.buffered_secs is not None:
            while self.buffered_secs() > RENDER_AHEAD_SECS and not self.interrupted:
                time.sleep(RENDER_POLL_SECS)
        if self.interrupted:
            return
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
