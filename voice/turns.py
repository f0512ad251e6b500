"""When the caller starts and stops speaking, from per-window VAD decisions (no I/O).

pipecat's ``VADParams`` as a small state machine: speech must last ``start_secs`` before the
caller is *speaking* (so a click or a cough does not barge in), and silence must last
``stop_secs`` before they have *stopped* (so a pause between words does not end the turn).

    >>> turns = TurnDetector(start_secs=0.064, stop_secs=0.2)
    >>> [turns.feed(True, 0.032, window_end=0.032 * n) for n in range(3)]  # 32 ms VAD windows
    [None, 'started', None]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Event = Literal["started", "stopped"]


@dataclass
class TurnDetector:
    start_secs: float
    stop_secs: float
    speaking: bool = False
    _run_secs: float = 0.0  # how long the opposite of the current state has lasted
    speech_started_at: float = 0.0
    speech_ended_at: float = 0.0  # when the last speech window ended (not when we knew)

    def feed(self, is_speech: bool, window_secs: float, window_end: float) -> Event | None:
        """One VAD window ending at ``window_end`` (monotonic seconds)."""
        if is_speech == self.speaking:
            self._run_secs = 0.0
            if is_speech:
                self.speech_ended_at = window_end
            return None
        self._run_secs += window_secs
        if is_speech:
            self.speech_ended_at = window_end
            if self._run_secs + 1e-9 >= self.start_secs:
                self.speaking, self._run_secs = True, 0.0
                self.speech_started_at = window_end - self.start_secs
                return "started"
            return None
        if self._run_secs + 1e-9 >= self.stop_secs:
            self.speaking, self._run_secs = False, 0.0
            return "stopped"
        return None

    def reset(self) -> None:
        self.speaking, self._run_secs = False, 0.0
