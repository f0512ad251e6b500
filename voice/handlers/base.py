"""What every streaming mode shares: read the socket, bound it, run the pipeline, clean up.

A handler serves one ACS media socket on the thread that accepted it (gunicorn gthread): that
thread reads and parses; the stages run in their own threads; one :class:`~voice.pacing.
PacedWriter` owns the send side. Subclasses choose the first stage (hearing audio, or ACS's
transcription). The socket is anything with :class:`MediaSocket`'s three methods; web/media.py
adapts flask-sock's.

Bounds: a message over ``MEDIA_MAX_FRAME_BYTES`` closes the socket with 1009, more than
``MEDIA_MAX_FRAMES_PER_SECOND`` messages in a second with 1008. Whatever ends the call (caller
hangs up, a bound, an error) the pipeline stops, every stage thread is joined and the engines go
back to their provider.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from settings import Settings
from voice.engines.base import EngineError, EngineProvider, Engines
from voice.frames import AudioIn, AudioMetadata, Dtmf, Frame, Interruption, TranscriptionIn
from voice.history import ConversationHistory, ConversationMemory
from voice.latency import LatencyTool
from voice.pacing import PacedWriter
from voice.pipeline import Pipeline, Stage
from voice.protocol import AcsParser
from voice.stages.reply import ReplyStage
from voice.stages.speech import SpeechStage

log = logging.getLogger("conduit.voice.handler")

# How often the socket thread wakes from a silent socket to see whether the call is over.
RECEIVE_POLL_SECS = 1.0
# A peer that sends nothing (not even ACS's silent frames) this long is gone.
IDLE_TIMEOUT_SECS = 60.0
# The frame-rate bound is a token bucket holding this many seconds of the allowed rate: frames
# that queued in the socket while this thread was busy (a call starting, a loaded machine) are
# read in a burst and must not count as a flood; a peer that keeps sending faster still is cut.
RATE_BURST_SECS = 3.0

# WebSocket close codes (RFC 6455 §7.4.1).
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_ERROR = 1011
CLOSE_TRY_LATER = 1013


class SocketClosed(Exception):
    """The peer closed the socket (or it broke)."""


class MediaSocket(Protocol):
    def receive(self, timeout: float | None) -> str | bytes | None:
        """The next message; None after ``timeout``; SocketClosed when the peer has gone."""

    def send(self, message: str) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


ChatStream = Callable[..., Iterator[str]]


class CallHandler:
    """One call on one socket. ``run()`` returns when the call is over."""

    mode = "BASE"

    def __init__(
        self,
        socket: MediaSocket,
        *,
        call_id: str,
        settings: Settings,
        engines: EngineProvider,
        memory: ConversationMemory | None = None,
        chat: ChatStream | None = None,
        latency: LatencyTool | None = None,
    ) -> None:
        self.socket = socket
        self.call_id = call_id
        self.settings = settings
        self.provider = engines
        self.memory: ConversationMemory = memory or ConversationHistory(
            settings.voice_history_tokens, settings.openai_engine
        )
        if chat is None:
            from tasks.chat_stream import stream_chat

            chat = stream_chat
        self.chat = chat
        self.latency = latency or LatencyTool(call_id)
        self.parser = AcsParser(call_id)
        self._lock = threading.Lock()
        self._open_turns: set[int] = set()
        self._latest_turn = 0
        self.interruptions = 0
        self.close_code = CLOSE_NORMAL
        self.close_reason = ""
        self.writer: PacedWriter | None = None
        self.reply: ReplyStage | None = None
        self.pipeline: Pipeline | None = None

    # --- what a mode provides -------------------------------------------------------------------
    def first_stage(self, engines: Engines) -> Stage:
        raise NotImplementedError

    def route(self, frame: Frame) -> None:
        """Send an inbound frame where it belongs (the first stage, unless a mode says else)."""
        assert self.pipeline is not None
        if isinstance(frame, Dtmf):
            # A key press interrupts like speech, then goes straight to the reply stage.
            self.on_speech_started(time.monotonic(), reason="dtmf")
            assert self.reply is not None
            self.reply.queue.put(frame)
        else:
            self.pipeline.put(frame)

    # --- turn state, from the stage threads -----------------------------------------------------
    @property
    def agent_busy(self) -> bool:
        """Answering: a turn is being written, spoken or still playing at ACS."""
        with self._lock:
            if self._open_turns:
                return True
        return self.writer is not None and self.writer.playhead > time.monotonic()

    def on_speech_started(self, at: float, reason: str = "speech") -> None:
        """The caller started speaking (or pressed a key): barge in when the agent is busy."""
        if not self.agent_busy or self.pipeline is None:
            return
        with self._lock:
            cancelled, self._open_turns = sorted(self._open_turns), set()
            latest = self._latest_turn
        self.interruptions += 1
        frame = Interruption(at=at, reason=reason, turn=latest)  # type: ignore[arg-type]
        dropped = self.pipeline.interrupt(frame)
        for turn in cancelled:
            self.latency.end_turn(turn, "interrupted")
        log.info(
            "barge-in: agent stopped",
            extra={"call_id": self.call_id, "reason": reason, "dropped_frames": dropped},
        )

    def on_turn_started(self, turn: int) -> None:
        with self._lock:
            self._open_turns.add(turn)
            self._latest_turn = max(self._latest_turn, turn)

    def on_spoken(self, turn: int, text: str, complete: bool) -> None:
        """The writer finished (or was interrupted in) a reply: keep what the caller heard."""
        with self._lock:
            self._open_turns.discard(turn)
        self.memory.append_to_history("assistant", text)

    # --- the call ------------------------------------------------------------------------------
    def build(self, engines: Engines) -> Pipeline:
        settings = self.settings
        self.writer = PacedWriter(
            self.socket.send,
            self.latency,
            lead_secs=settings.voice_playback_lead_ms / 1000,
            on_spoken=self.on_spoken,
        )
        reply = ReplyStage(
            memory=self.memory,
            latency=self.latency,
            chat=self.chat,
            system_prompt=settings.voice_system_prompt,
            max_tokens=settings.voice_max_tokens,
            app_id=settings.voice_app_id,
            on_turn_started=self.on_turn_started,
            call_id=self.call_id,
        )
        self.reply = reply
        speech = SpeechStage(engines.synthesizer, self.latency, self.call_id)
        return Pipeline([self.first_stage(engines), reply, speech, self.writer])

    def run(self) -> None:
        try:
            engines = self.provider.acquire()
        except EngineError as error:
            log.error("speech engines unavailable: %s", error, extra={"call_id": self.call_id})
            self._set_close(CLOSE_ERROR, "speech engines unavailable")
            self._close()
            return
        try:
            self.pipeline = self.build(engines)
            self.pipeline.start(self.call_id)
            self._read()
        except Exception:
            log.exception("voice call failed", extra={"call_id": self.call_id})
            self._set_close(CLOSE_ERROR, "internal error")
        finally:
            if self.pipeline is not None:
                self.pipeline.stop()
            self.provider.release(engines)
            self._close()
            log.info("voice call ended", extra={"call_id": self.call_id, **self.report()})

    def _read(self) -> None:
        settings = self.settings
        rate = settings.media_max_frames_per_second
        capacity = rate * RATE_BURST_SECS
        tokens, refilled = capacity, time.monotonic()
        last_message = time.monotonic()
        while True:
            try:
                message = self.socket.receive(RECEIVE_POLL_SECS)
            except SocketClosed:
                return
            now = time.monotonic()
            if self.pipeline is not None and self.pipeline.errors:
                self._set_close(CLOSE_ERROR, "internal error")
                return
            if message is None:
                if now - last_message > IDLE_TIMEOUT_SECS:
                    self._set_close(CLOSE_NORMAL, "idle")
                    return
                continue
            last_message = now
            if len(message) > settings.media_max_frame_bytes:
                self._set_close(CLOSE_TOO_BIG, "frame too large")
                return
            tokens = min(capacity, tokens + (now - refilled) * rate) - 1
            refilled = now
            if tokens < 0:
                self._set_close(CLOSE_POLICY, "too many frames per second")
                return
            frame = self.parser.parse(message)
            if frame is not None and self.accepts(frame):
                self.route(frame)

    def accepts(self, frame: Frame) -> bool:
        return isinstance(frame, AudioMetadata | AudioIn | Dtmf | TranscriptionIn)

    def _set_close(self, code: int, reason: str) -> None:
        self.close_code, self.close_reason = code, reason
        if code != CLOSE_NORMAL:
            log.warning(
                "closing media socket: %s", reason, extra={"call_id": self.call_id, "code": code}
            )

    def _close(self) -> None:
        try:
            self.socket.close(self.close_code, self.close_reason)
        except Exception:  # noqa: BLE001 - already closed by the peer
            pass

    def report(self) -> dict[str, Any]:
        writer = self.writer
        return {
            "mode": self.mode,
            "turns": self._latest_turn,
            "llm_failures": self.reply.failed_turns if self.reply else 0,
            "interruptions": self.interruptions,
            "frames_sent": writer.frames_sent if writer else 0,
            "underruns": writer.underruns if writer else 0,
            "unknown_kinds": dict(self.parser.counters.unknown_kinds),
            "malformed": self.parser.counters.malformed,
            "latency": self.latency.summary(),
            # Word counts, never words: how much of each message the history kept.
            "history_words": [len(m["content"].split()) for m in self.memory.history],
        }
