"""VOICE_LIVE mode: relay the call to Azure Voice Live, a speech-to-speech service.

Voice Live hears, thinks and speaks; Conduit relays. The ACS socket's thread forwards the caller's
audio (``input_audio_buffer.append``) and DTMF keys (a user message and a response); a reader
thread takes Voice Live's events: ``response.audio.delta`` becomes reply audio for the one paced
writer (voice/pacing.py), transcripts go into the conversation memory, and
``input_audio_buffer.speech_started`` while the agent talks is a barge-in: the writer sends
StopAudio at once and drops the rest of that reply, and the response is cancelled upstream.
The memory keeps, of an interrupted reply, the words the caller heard.

If Voice Live drops, the ACS side is closed (1011) so ACS ends the media stream cleanly instead of
streaming into nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import websocket

from voice.frames import AudioIn, AudioMetadata, Dtmf, Frame, TTSAudio
from voice.handlers.base import CLOSE_ERROR, CallHandler
from voice.pacing import PacedWriter
from voice.pipeline import Pipeline, Stage
from voice.voice_live import (
    ENTRA_SCOPE,
    append_audio,
    audio_delta,
    cancel_response,
    decode,
    dtmf_item,
    encode,
    greeting,
    realtime_url,
    session_update,
)

log = logging.getLogger("conduit.voice.voice_live")

CONNECT_TIMEOUT_SECS = 10.0
# The reader wakes this often to notice the call ended.
RECV_POLL_SECS = 0.5


class RelaySocket(Protocol):
    def send(self, payload: str) -> object: ...

    def recv(self) -> str | bytes: ...

    def settimeout(self, timeout: float | None) -> None: ...

    def close(self) -> None: ...

    def shutdown(self) -> None: ...


def connect_voice_live(handler: CallHandler) -> RelaySocket:
    """Open the Voice Live socket as settings say (an API key, or an Entra ID token)."""
    settings = handler.settings
    url = realtime_url(settings)
    if settings.voice_live_api_key is not None:
        header = [f"api-key: {settings.voice_live_api_key.get_secret_value()}"]
    else:
        from azure.identity import DefaultAzureCredential

        token = DefaultAzureCredential().get_token(ENTRA_SCOPE).token
        header = [f"Authorization: Bearer {token}"]
    return websocket.create_connection(url, header=header, timeout=CONNECT_TIMEOUT_SECS)


class VoiceLiveStage(Stage):
    """Caller → Voice Live (this stage's thread) and Voice Live → writer (its reader thread)."""

    name = "voice-live"
    interruptible = False  # it hears the interruptions; the caller's audio must keep flowing

    def __init__(self, handler: VoiceLiveHandler, relay: RelaySocket, sample_rate: int) -> None:
        super().__init__()
        self.handler, self.relay, self.sample_rate = handler, relay, sample_rate
        self._send_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._stopping = threading.Event()
        self.turn = 0
        self._clause = 0
        self._words = ""  # transcript not yet attached to audio
        self._cancelled: set[str] = set()
        self._response: str | None = None
        self.events_in = 0

    # --- caller → Voice Live ---------------------------------------------------------------------
    def send(self, event: dict[str, Any]) -> None:
        with self._send_lock:
            self.relay.send(encode(event))

    def start(self, call_id: str = "") -> None:
        self.send(session_update(self.handler.settings, self.sample_rate))
        self.send(greeting(self.handler.settings.voice_live_greeting))
        self.relay.settimeout(RECV_POLL_SECS)
        self._reader = threading.Thread(
            target=self._read, name=f"voice-live-read-{call_id[:12]}", daemon=True
        )
        self._reader.start()
        super().start(call_id)

    def process_frame(self, frame: Frame) -> None:
        try:
            if isinstance(frame, AudioIn):
                self.send(append_audio(frame.pcm))
            elif isinstance(frame, Dtmf):
                for event in dtmf_item(frame.digit):
                    self.send(event)
            elif isinstance(frame, AudioMetadata) and frame.sample_rate != self.sample_rate:
                # ACS says another rate than settings: tell Voice Live, both ways.
                self.sample_rate = frame.sample_rate
                self.send(session_update(self.handler.settings, frame.sample_rate))
                self.push(frame)  # the writer frames its audio at the same rate
        except (OSError, websocket.WebSocketException):
            self.handler.voice_live_dropped("send failed")

    def on_stop(self) -> None:
        self._stopping.set()
        try:
            self.relay.close()
        except (OSError, websocket.WebSocketException):
            pass
        finally:
            # close() skips a socket the peer already dropped; shutdown() frees it either way.
            self.relay.shutdown()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(RECV_POLL_SECS * 4)

    # --- Voice Live → writer ---------------------------------------------------------------------
    def _read(self) -> None:
        while not self._stopping.is_set():
            try:
                message = self.relay.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except (OSError, websocket.WebSocketException):
                break
            if not message:
                break
            event = decode(message)
            if event is not None:
                self.events_in += 1
                self._on_event(event)
        if not self._stopping.is_set():
            self.handler.voice_live_dropped("Voice Live closed the connection")

    def _on_event(self, event: dict[str, Any]) -> None:  # noqa: PLR0912 - one branch per event
        kind = event["type"]
        response_id = str(event.get("response_id") or (event.get("response") or {}).get("id") or "")
        if kind == "input_audio_buffer.speech_started":
            if self.handler.agent_busy:
                if self._response:
                    self._cancelled.add(self._response)
                    self._safe_send(cancel_response())
                self.handler.on_speech_started(time.monotonic(), "speech")
        elif kind == "response.created":
            self.turn += 1
            self._clause, self._words, self._response = 0, "", response_id
            self.handler.on_turn_started(self.turn)
        elif kind == "response.audio_transcript.delta":
            self._words += str(event.get("delta") or "")
        elif kind == "response.audio.delta":
            if response_id in self._cancelled:
                return
            pcm = audio_delta(event)
            if pcm:
                self._emit(TTSAudio(pcm, self._words.strip(), self.turn, self._clause))
                self._clause, self._words = self._clause + 1, ""
        elif kind == "response.done":
            if response_id not in self._cancelled and self.turn:
                self._emit(
                    TTSAudio(b"", self._words.strip(), self.turn, self._clause, last_of_turn=True)
                )
            self._response = None
        elif kind == "conversation.item.input_audio_transcription.completed":
            text = str(event.get("transcript") or "").strip()
            if text:
                self.handler.memory.append_to_history("user", text)
        elif kind == "error":
            detail = (event.get("error") or {}).get("message", "")
            log.warning(
                "Voice Live error: %s", str(detail)[:200], extra={"call_id": self.handler.call_id}
            )

    def _emit(self, frame: TTSAudio) -> None:
        if self._downstream is not None:
            self._downstream(frame)

    def _safe_send(self, event: dict[str, Any]) -> None:
        try:
            self.send(event)
        except (OSError, websocket.WebSocketException):
            pass


class VoiceLiveHandler(CallHandler):
    mode = "VOICE_LIVE"
    # Tests replace this to reach a local fake Voice Live.
    connect: Callable[[CallHandler], RelaySocket] = staticmethod(connect_voice_live)

    def route(self, frame: Frame) -> None:
        assert self.pipeline is not None
        if isinstance(frame, Dtmf):
            self.on_speech_started(time.monotonic(), reason="dtmf")
        self.pipeline.put(frame)

    def on_spoken(self, turn: int, text: str, complete: bool) -> None:
        # Audio chunks without transcript words leave empty clauses in the writer's join.
        super().on_spoken(turn, " ".join(text.split()), complete)

    def voice_live_dropped(self, reason: str) -> None:
        """Voice Live is gone: close the ACS socket, which ends the read loop and the call."""
        log.warning(
            "Voice Live dropped (%s); closing the media socket",
            reason,
            extra={"call_id": self.call_id},
        )
        self._set_close(CLOSE_ERROR, "voice live disconnected")
        self._close()

    def run(self) -> None:
        try:
            relay = type(self).connect(self)
        except Exception as error:  # noqa: BLE001 - any failure to connect ends the call cleanly
            log.error("Voice Live unreachable: %s", error, extra={"call_id": self.call_id})
            self._set_close(CLOSE_ERROR, "voice live unreachable")
            self._close()
            return
        rate = self.settings.acs_audio_sample_rate
        self.writer = PacedWriter(
            self.socket.send,
            self.latency,
            lead_secs=self.settings.voice_playback_lead_ms / 1000,
            on_spoken=self.on_spoken,
            sample_rate=rate,
        )
        self.relay_stage = VoiceLiveStage(self, relay, rate)
        self.pipeline = Pipeline([self.relay_stage, self.writer])
        try:
            self.pipeline.start(self.call_id)
            self._read()
        finally:
            self.pipeline.stop()
            self._close()
            log.info("voice call ended", extra={"call_id": self.call_id, **self.report()})
