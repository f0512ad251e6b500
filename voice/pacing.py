"""The one writer of a call's socket: reply audio out as 20 ms frames at real-time pace.

ACS plays what it receives from its own buffer. The writer keeps that buffer at most
``VOICE_PLAYBACK_LEAD_MS`` ahead of real time: enough that a late thread on a busy machine does
not leave a gap, little enough that StopAudio has almost nothing to flush and the caller hears
the agent stop at once. The writer tracks where ACS's playback is (:attr:`PacedWriter.playhead`,
when all audio sent so far will have played), which also tells how much of an interrupted reply
the caller actually heard.

An :class:`~voice.frames.Interruption` overtakes everything queued: StopAudio goes out first
(if any reply audio is still playing or queued), every queued frame is dropped, and the part of
the reply that was heard is reported through ``on_spoken`` (the handler stores only that in the
history, as pipecat and LiveKit do). A reply played to its end is reported whole.

Underruns are counted where the caller would hear them: a reply frame that leaves more than
:data:`UNDERRUN_SECS` after the previous one finished playing.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from voice.audio import split_frames
from voice.frames import (
    FRAME_MS,
    AudioMetadata,
    EndOfCall,
    Frame,
    Interruption,
    TTSAudio,
    frame_bytes,
)
from voice.latency import LatencyTool
from voice.pipeline import POLL_SECS, Stage
from voice.protocol import audio_message, stop_audio_message

log = logging.getLogger("conduit.voice.pacing")

FRAME_SECS = FRAME_MS / 1000
# A gap longer than this inside a reply is audible (two frames).
UNDERRUN_SECS = 0.04


@dataclass
class _Clause:
    text: str
    frames: int = 0
    sent: int = 0


@dataclass
class _Queued:
    pcm: bytes | None  # None: the end-of-reply marker
    turn: int
    clause: int


class PacedWriter(Stage):
    name = "writer"

    def __init__(
        self,
        send: Callable[[str], None],
        latency: LatencyTool,
        *,
        lead_secs: float,
        on_spoken: Callable[[int, str, bool], None],
        sample_rate: int = 16000,
    ) -> None:
        super().__init__()
        self._send = send
        self.latency = latency
        self.lead_secs = max(lead_secs, FRAME_SECS)
        self.on_spoken = on_spoken
        self.frame_size = frame_bytes(sample_rate)
        self._pending: collections.deque[_Queued] = collections.deque()
        self._clauses: dict[tuple[int, int], _Clause] = {}
        self.playhead = 0.0  # monotonic time at which everything sent will have played
        self._in_reply = False  # a reply frame went out and its end has not
        self.frames_sent = 0
        self.stops_sent = 0
        self.underruns = 0
        self.socket_closed = False
        self._cancelled_through = 0  # turns up to this one were interrupted

    # --- the loop: send when due, else wait for a frame until then -----------------------------
    def run(self) -> None:
        while True:
            timeout = POLL_SECS
            if self._pending:
                ahead = self.playhead - time.monotonic()
                if ahead <= self.lead_secs - FRAME_SECS:
                    self._send_next()
                    continue
                timeout = ahead - (self.lead_secs - FRAME_SECS)
            frame = self.queue.get(timeout)
            if frame is None:
                if self.queue.closed:
                    return
                continue
            if isinstance(frame, EndOfCall):
                return
            self.process_frame(frame)

    def process_frame(self, frame: Frame) -> None:
        if isinstance(frame, AudioMetadata):
            self.frame_size = frame_bytes(frame.sample_rate)
        elif isinstance(frame, TTSAudio):
            self._enqueue(frame)
        elif isinstance(frame, Interruption):
            self._interrupt(frame)

    def _enqueue(self, frame: TTSAudio) -> None:
        if frame.turn <= self._cancelled_through:
            return  # rendered for a turn that was interrupted while it travelled here
        key = (frame.turn, frame.clause)
        if frame.pcm:
            clause = self._clauses.setdefault(key, _Clause(frame.text))
            for pcm in split_frames(frame.pcm, self.frame_size):
                self._pending.append(_Queued(pcm, frame.turn, frame.clause))
                clause.frames += 1
        if frame.last_of_turn:
            self._pending.append(_Queued(None, frame.turn, frame.clause))

    def _send_next(self) -> None:
        item = self._pending.popleft()
        if item.pcm is None:
            self._end_reply(item.turn)
            return
        now = time.monotonic()
        if not self._in_reply:
            self._in_reply = True
            self.latency.mark(item.turn, "first_frame", now)
        elif now - self.playhead > UNDERRUN_SECS:
            self.underruns += 1
        self._write(audio_message(item.pcm))
        self.playhead = max(self.playhead, now) + FRAME_SECS
        self.frames_sent += 1
        clause = self._clauses.get((item.turn, item.clause))
        if clause is not None:
            clause.sent += 1

    def _end_reply(self, turn: int) -> None:
        texts = [c.text for (t, _), c in sorted(self._clauses.items()) if t == turn]
        self._forget(turn)
        self._in_reply = False
        self.latency.end_turn(turn)
        self.on_spoken(turn, " ".join(texts), True)

    def _interrupt(self, frame: Interruption) -> None:
        self._cancelled_through = max(self._cancelled_through, frame.turn)
        now = time.monotonic()
        playing = self._in_reply or self.playhead > now or bool(self._pending)
        if playing:
            self._write(stop_audio_message())
            self.stops_sent += 1
            self.latency.barge_in(frame.at, time.monotonic())
        unplayed = max(0, round((self.playhead - now) / FRAME_SECS))
        self._pending.clear()
        self.playhead = now
        self._in_reply = False
        for turn in sorted({t for t, _ in self._clauses}):
            heard = self._heard_text(turn, unplayed)
            self._forget(turn)
            self.latency.end_turn(turn, "interrupted")
            self.on_spoken(turn, heard, False)

    def _heard_text(self, turn: int, unplayed: int) -> str:
        """The words of ``turn`` the caller heard: sent frames minus those still buffered at ACS
        (which StopAudio flushed), each clause cut in proportion to the part of it played."""
        clauses = [c for (t, _), c in sorted(self._clauses.items()) if t == turn]
        for clause in reversed(clauses):
            taken = min(unplayed, clause.sent)
            clause.sent -= taken
            unplayed -= taken
        words: list[str] = []
        for clause in clauses:
            if clause.sent == 0 or clause.frames == 0:
                break
            clause_words = clause.text.split()
            share = clause.sent / clause.frames
            words += clause_words[: round(len(clause_words) * share)]
            if clause.sent < clause.frames:
                break
        return " ".join(words)

    def _forget(self, turn: int) -> None:
        for key in [key for key in self._clauses if key[0] == turn]:
            del self._clauses[key]

    def _write(self, message: str) -> None:
        if self.socket_closed:
            return
        try:
            self._send(message)
        except Exception as error:  # noqa: BLE001 - the socket is gone; the call is ending
            self.socket_closed = True
            log.info("media socket closed while writing: %s", type(error).__name__)
