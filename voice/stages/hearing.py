"""Hear the caller (MEDIA mode): VAD for turn taking, the recogniser for the words.

Audio arrives at the call's rate and is resampled to 16 kHz. Every frame goes through the VAD;
the recogniser only hears utterances (from :data:`PREROLL_SECS` before the VAD's start, so the
first phoneme is not lost) and so costs nothing on silence. When the caller has spoken for
``VAD_START_SECONDS`` the handler is told at once (barge-in is its decision); after
``VAD_STOP_SECONDS`` of silence the recogniser's final text ends the turn: an
:class:`~voice.frames.EndOfTurn` for the reply stage, stamped with when speech really ended.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable

from voice.audio import StreamResampler
from voice.engines.base import ENGINE_SAMPLE_RATE, Engines
from voice.frames import AudioIn, AudioMetadata, EndOfTurn, Frame, Interruption
from voice.pipeline import Stage
from voice.turns import TurnDetector

log = logging.getLogger("conduit.voice.hearing")

# Audio kept from before the VAD fired, for the recogniser: the VAD needs ~64 ms of speech to
# fire, and the quiet start of a word comes before that.
PREROLL_SECS = 0.3
# What ACS streams unless its AudioMetadata says otherwise.
DEFAULT_SAMPLE_RATE = 16000


class HearingStage(Stage):
    name = "hearing"
    interruptible = False  # it hears the interruptions; there is nothing in it to cancel

    def __init__(
        self,
        engines: Engines,
        *,
        start_secs: float,
        stop_secs: float,
        max_utterance_secs: float,
        on_speech_started: Callable[[float], None],
    ) -> None:
        super().__init__()
        self.engines = engines
        self.turns = TurnDetector(start_secs=start_secs, stop_secs=stop_secs)
        self.max_utterance_secs = max_utterance_secs
        self.on_speech_started = on_speech_started
        self._resample = StreamResampler(DEFAULT_SAMPLE_RATE, ENGINE_SAMPLE_RATE)
        preroll_frames = int(PREROLL_SECS * 50)
        self._preroll: collections.deque[bytes] = collections.deque(maxlen=preroll_frames)
        self._utterance_bytes = 0

    def process_frame(self, frame: Frame) -> None:
        if isinstance(frame, AudioMetadata):
            self._resample = StreamResampler(frame.sample_rate, ENGINE_SAMPLE_RATE)
            self.push(frame)
        elif isinstance(frame, AudioIn):
            self._hear(frame.pcm)
        elif not isinstance(frame, Interruption):
            self.push(frame)

    def _hear(self, pcm: bytes) -> None:
        now = time.monotonic()
        audio = self._resample(pcm)
        if not audio:
            return
        self._preroll.append(audio)
        vad = self.engines.vad
        for index, is_speech in enumerate(decisions := vad.windows(audio)):
            # The windows this frame completed end at about now, the last one exactly.
            window_end = now - (len(decisions) - 1 - index) * vad.window_secs
            event = self.turns.feed(is_speech, vad.window_secs, window_end)
            if event == "started":
                self._start_utterance(window_end)
            elif event == "stopped":
                self._end_utterance()
        if self.turns.speaking:
            self.engines.recognizer.push(audio)
            self._utterance_bytes += len(audio)
            if self._utterance_bytes >= self.max_utterance_secs * ENGINE_SAMPLE_RATE * 2:
                self.turns.reset()
                self._end_utterance()

    def _start_utterance(self, detected_at: float) -> None:
        self.on_speech_started(detected_at)
        recognizer = self.engines.recognizer
        recognizer.start_utterance()
        # The pre-roll holds this frame too; it is pushed below with the rest of the utterance.
        preroll = list(self._preroll)[:-1]
        for chunk in preroll:
            recognizer.push(chunk)
        self._utterance_bytes = sum(len(chunk) for chunk in preroll)

    def _end_utterance(self) -> None:
        text = self.engines.recognizer.finish_utterance()
        final_at = time.monotonic()
        self._utterance_bytes = 0
        self._preroll.clear()
        if text:
            self.push(EndOfTurn(text, self.turns.speech_ended_at, final_at))
        else:
            log.debug("speech with no words recognised; no turn")
