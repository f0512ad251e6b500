"""The scripted caller: what a person on the phone does on ACS's media WebSocket.

Once Conduit answers, ACS opens the media socket to the transport URL with a bearer JWT and
streams the call's audio at 50 frames a second whether anyone speaks or not. The caller does the
same: one sender thread sends a 20 ms frame every 20 ms (speech from espeak-ng when it has some
queued, ``silent`` frames otherwise, as ACS marks them), and one reader thread records every
frame the agent sends back, with its arrival time.

The script speaks each utterance, then waits for the agent's reply (first audio, then quiet),
optionally barges in while the agent talks, sends DTMF digits, and hangs up. The report holds,
per turn, end of the caller's speech → first agent audio, the reply's length, what the local
recogniser heard both ways, and per barge-in the time from the caller's first word to the
agent's StopAudio.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import soxr
import websocket

from emulators.speech import DEFAULT_VOICE, synthesize

FRAME_SECS = 0.02
# The agent's reply is over when no audio came for this long after it began.
REPLY_QUIET_SECS = 0.8
# A reply must begin this soon after the caller stops speaking, or the turn counts as unanswered.
REPLY_TIMEOUT_SECS = 20.0
# Media frames are tiny; a read blocks this long at most, so the reader notices the hang-up.
RECV_TIMEOUT_SECS = 0.5
CONNECT_TIMEOUT_SECS = 10.0
# A frame larger than 1 s of 24 kHz audio is not something an agent sends.
MAX_INBOUND_FRAME_BYTES = 256 * 1024
# The agent's first reply plays this long before the caller interrupts it (with barge_in set).
DEFAULT_BARGE_IN_AFTER_SECS = 0.6


@dataclass
class CallScript:
    """What the caller says and does."""

    utterances: list[str]
    voice: str = DEFAULT_VOICE
    # Spoken this long after the first reply starts, to interrupt it; None: never interrupts.
    barge_in: str | None = None
    barge_in_after_s: float = DEFAULT_BARGE_IN_AFTER_SECS
    # Sent as DtmfData frames after the last turn.
    dtmf: str = ""
    pause_s: float = 0.4
    reply_timeout_s: float = REPLY_TIMEOUT_SECS
    # Transcribe both sides for the report (CPU a benchmark may not want to spend).
    transcribe: bool = True

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> CallScript:
        utterances = body.get("utterances") or (
            [body["question"]] if isinstance(body.get("question"), str) else []
        )
        if not isinstance(utterances, list) or not all(isinstance(u, str) for u in utterances):
            raise ValueError("'utterances' must be a list of strings (or give one 'question')")
        barge_in = body.get("barge_in")
        return cls(
            utterances=[u for u in utterances if u.strip()],
            voice=str(body.get("voice") or DEFAULT_VOICE),
            barge_in=barge_in if isinstance(barge_in, str) and barge_in.strip() else None,
            barge_in_after_s=float(body.get("barge_in_after_s", DEFAULT_BARGE_IN_AFTER_SECS)),
            dtmf="".join(ch for ch in str(body.get("dtmf", "")) if ch in "0123456789*#ABCD"),
            reply_timeout_s=float(body.get("reply_timeout_s", REPLY_TIMEOUT_SECS)),
            transcribe=bool(body.get("transcribe", True)),
        )


@dataclass
class Turn:
    said: str
    caller_heard_as: str = ""
    eou_to_first_audio_ms: float | None = None
    reply_audio_s: float = 0.0
    agent_said: str = ""


@dataclass
class CallReport:
    call_id: str
    started_at: str
    turns: list[Turn] = field(default_factory=list)
    barge_in_to_stop_audio_ms: list[float] = field(default_factory=list)
    stop_audio_received: int = 0
    audio_frames_received: int = 0
    dtmf_sent: str = ""
    hung_up_by: str = ""
    # From the media socket opening to its end.
    duration_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Inbound:
    """Everything the agent sent, with arrival times (monotonic)."""

    def __init__(self) -> None:
        self.audio: list[tuple[float, bytes]] = []
        self.stop_audio: list[float] = []
        self.changed = threading.Condition()
        self.closed = False

    def since(self, start: float) -> list[tuple[float, bytes]]:
        with self.changed:
            return [(t, data) for t, data in self.audio if t >= start]


class ScriptedCaller:
    """One call's caller on one media socket. ``run()`` blocks until the script is done or the
    agent's side closes; ``hang_up()`` (from another thread) ends it early."""

    def __init__(
        self,
        call_id: str,
        transport_url: str,
        *,
        token: str,
        sample_rate: int,
        script: CallScript,
        transcribe: Callable[[np.ndarray], str] | None = None,
        on_open: Callable[[], None] | None = None,
        transcription_locale: str | None = None,
    ) -> None:
        self.on_open = on_open
        # Set: ACS transcribes the caller (TRANSCRIPTION mode) and streams text, not audio.
        self.transcription_locale = transcription_locale
        self.call_id, self.transport_url, self.token = call_id, transport_url, token
        self.sample_rate, self.script, self.transcribe = sample_rate, script, transcribe
        self.report = CallReport(call_id=call_id, started_at=datetime.now(UTC).isoformat())
        self._samples_per_frame = int(sample_rate * FRAME_SECS)
        self._outbox: deque[tuple[str, Any]] = deque()
        self._outbox_lock = threading.Lock()
        self._marks = itertools.count()
        self._sent_marks: dict[int, float] = {}
        self._marks_ready = threading.Condition()
        self._inbound = _Inbound()
        self._stopping = threading.Event()
        self._ws: websocket.WebSocket | None = None
        self._close_reason = ""

    # --- public ----------------------------------------------------------------------------------
    def hang_up(self) -> None:
        self._stopping.set()

    def run(self) -> CallReport:
        try:
            self._ws = websocket.create_connection(
                self.transport_url,
                header=[
                    f"Authorization: Bearer {self.token}",
                    f"x-ms-call-connection-id: {self.call_id}",
                    f"x-ms-call-correlation-id: {self.call_id}",
                ],
                timeout=CONNECT_TIMEOUT_SECS,
            )
        except (OSError, websocket.WebSocketException) as error:
            self.report.errors.append(f"media socket did not open: {error}")
            return self.report
        opened = time.monotonic()
        if self.on_open is not None:
            self.on_open()
        self._ws.settimeout(RECV_TIMEOUT_SECS)
        reader = threading.Thread(target=self._read, name=f"acs-caller-read-{self.call_id[:8]}")
        sender = threading.Thread(target=self._send, name=f"acs-caller-send-{self.call_id[:8]}")
        self._send_json(self._metadata())
        reader.start()
        sender.start()
        try:
            self._play_script()
        except Exception as error:  # noqa: BLE001 - goes into the report, the call still ends
            self.report.errors.append(f"{type(error).__name__}: {error}")
        finally:
            if not self.report.hung_up_by:
                self.report.hung_up_by = "agent" if self._inbound.closed else "caller"
            if self._inbound.closed and not self._stopping.is_set():
                why = f" ({self._close_reason})" if self._close_reason else ""
                self.report.errors.append(f"the agent closed the media socket mid-call{why}")
            self._stopping.set()
            sender.join()
            try:
                self._ws.close()
            except (OSError, websocket.WebSocketException):
                pass
            reader.join()
            # close() skips a socket the agent already dropped; shutdown() frees it either way.
            self._ws.shutdown()
        self.report.duration_s = round(time.monotonic() - opened, 2)
        with self._inbound.changed:
            self.report.audio_frames_received = len(self._inbound.audio)
            self.report.stop_audio_received = len(self._inbound.stop_audio)
        return self.report

    # --- the script ------------------------------------------------------------------------------
    def _play_script(self) -> None:
        for index, text in enumerate(self.script.utterances):
            if self._ended():
                return
            barge_in = self.script.barge_in if index == 0 else None
            self.report.turns.append(self._turn(text, barge_in))
            self._wait(self.script.pause_s)
        for digit in self.script.dtmf:
            self._enqueue("dtmf", digit)
            self.report.dtmf_sent += digit
        if self.script.dtmf:
            self._wait(REPLY_QUIET_SECS)

    def _turn(self, text: str, barge_in: str | None) -> Turn:
        turn = Turn(said=text)
        pcm = synthesize(text, self.script.voice, self.sample_rate)
        if self.transcribe is not None:
            turn.caller_heard_as = self.transcribe(self._to_16k(pcm))
        mark = self._enqueue_speech(pcm, text)
        eou = self._wait_for_mark(mark)
        if eou is None:
            return turn
        first = self._wait_for_audio_after(eou, self.script.reply_timeout_s)
        if first is None:
            self.report.errors.append(f"no reply to {text!r} within {self.script.reply_timeout_s}s")
            return turn
        turn.eou_to_first_audio_ms = round((first - eou) * 1000, 1)
        if barge_in:
            self._wait(self.script.barge_in_after_s)
            stops_before = len(self._inbound.stop_audio)
            interrupt_mark = self._enqueue_speech(
                synthesize(barge_in, self.script.voice, self.sample_rate), barge_in
            )
            speech_started = time.monotonic()
            stopped = self._wait_for_stop_audio(stops_before, self.script.reply_timeout_s)
            if stopped is not None:
                self.report.barge_in_to_stop_audio_ms.append(
                    round((stopped - speech_started) * 1000, 1)
                )
            else:
                self.report.errors.append("barge-in got no StopAudio")
            self._wait_for_mark(interrupt_mark)
            reply = [(t, d) for t, d in self._inbound.since(eou) if stopped is None or t < stopped]
        else:
            self._wait_for_quiet(first)
            reply = self._inbound.since(eou)
        audio = b"".join(data for _, data in reply)
        turn.reply_audio_s = round(len(audio) / 2 / self.sample_rate, 3)
        if self.transcribe is not None and audio:
            turn.agent_said = self.transcribe(self._to_16k(np.frombuffer(audio, dtype=np.int16)))
        if barge_in:
            # The interruption is itself a question: wait for (and keep) its answer too.
            interrupt_turn = Turn(said=barge_in)
            end = self._sent_marks.get(interrupt_mark)
            if end is not None:
                first = self._wait_for_audio_after(end, self.script.reply_timeout_s)
                if first is not None:
                    interrupt_turn.eou_to_first_audio_ms = round((first - end) * 1000, 1)
                    self._wait_for_quiet(first)
            self.report.turns.append(turn)
            return interrupt_turn
        return turn

    # --- waiting ---------------------------------------------------------------------------------
    def _ended(self) -> bool:
        return self._stopping.is_set() or self._inbound.closed

    def _wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _wait_for_mark(self, mark: int) -> float | None:
        with self._marks_ready:
            self._marks_ready.wait_for(
                lambda: mark in self._sent_marks or self._ended(), timeout=REPLY_TIMEOUT_SECS * 3
            )
            return self._sent_marks.get(mark)

    def _wait_for_audio_after(self, start: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self._inbound.changed:
            while not self._ended():
                later = [t for t, _ in self._inbound.audio[-50:] if t >= start]
                if later:
                    return later[0]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._inbound.changed.wait(min(remaining, RECV_TIMEOUT_SECS))
        return None

    def _wait_for_quiet(self, first: float) -> None:
        """Until no agent audio has come for REPLY_QUIET_SECS (or StopAudio, or hang-up)."""
        with self._inbound.changed:
            while not self._ended():
                last = self._inbound.audio[-1][0] if self._inbound.audio else first
                quiet_for = time.monotonic() - max(last, first)
                if quiet_for >= REPLY_QUIET_SECS:
                    return
                self._inbound.changed.wait(REPLY_QUIET_SECS - quiet_for)

    def _wait_for_stop_audio(self, seen: int, timeout: float) -> float | None:
        with self._inbound.changed:
            self._inbound.changed.wait_for(
                lambda: len(self._inbound.stop_audio) > seen or self._ended(), timeout
            )
            return self._inbound.stop_audio[seen] if len(self._inbound.stop_audio) > seen else None

    # --- sending ---------------------------------------------------------------------------------
    def _enqueue(self, kind: str, value: Any) -> None:
        with self._outbox_lock:
            self._outbox.append((kind, value))

    def _enqueue_speech(self, pcm: np.ndarray, text: str) -> int:
        """Queue ``pcm`` as 20 ms frames (or, in TRANSCRIPTION mode, ACS's results for ``text``
        paced as the speech is: an intermediate result as each word ends, then the final);
        returns a mark whose time is when the last of it left."""
        n = self._samples_per_frame
        padded = np.concatenate([pcm, np.zeros((-len(pcm)) % n, dtype=np.int16)])
        frames = [padded[start : start + n].tobytes() for start in range(0, len(padded), n)]
        with self._outbox_lock:
            if self.transcription_locale is None:
                self._outbox.extend(("audio", frame) for frame in frames)
            else:
                words = text.split()
                ends = {len(frames) * (i + 1) // len(words) - 1: i for i in range(len(words))}
                for index in range(len(frames)):
                    if index in ends and ends[index] < len(words) - 1:
                        partial = " ".join(words[: ends[index] + 1])
                        self._outbox.append(("json", self._transcription(partial, final=False)))
                    else:
                        self._outbox.append(("tick", None))
                self._outbox.append(("json", self._transcription(text, final=True)))
            mark = next(self._marks)
            self._outbox.append(("mark", mark))
            return mark

    def _send(self) -> None:
        silence = bytes(self._samples_per_frame * 2)
        next_at = time.monotonic()
        while not self._ended():
            item: tuple[str, Any] | None = None
            with self._outbox_lock:
                while self._outbox and self._outbox[0][0] in ("mark", "dtmf"):
                    kind, value = self._outbox.popleft()
                    if kind == "mark":
                        with self._marks_ready:
                            self._sent_marks[value] = time.monotonic()
                            self._marks_ready.notify_all()
                    else:
                        self._send_json({"kind": "DtmfData", "dtmfData": {"data": value}})
                if self._outbox:
                    item = self._outbox.popleft()
            try:
                if item is not None and item[0] == "json":
                    self._send_json(item[1])
                elif item is not None and item[0] == "audio":
                    self._send_json(self._audio_frame(item[1], silent=False))
                elif item is None and self.transcription_locale is None:
                    # ACS streams audio all the time; in TRANSCRIPTION mode only results.
                    self._send_json(self._audio_frame(silence, silent=True))
            except (OSError, websocket.WebSocketException):
                self._inbound.closed = True
                break
            next_at += FRAME_SECS
            # Behind by more than a frame (a loaded machine): carry on from now, as ACS would.
            next_at = max(next_at, time.monotonic() - FRAME_SECS)
            self._stopping.wait(max(0.0, next_at - time.monotonic()))
        with self._marks_ready:
            self._marks_ready.notify_all()

    def _send_json(self, message: dict[str, Any]) -> None:
        assert self._ws is not None
        self._ws.send(json.dumps(message))

    def _metadata(self) -> dict[str, Any]:
        if self.transcription_locale is not None:
            return {
                "kind": "TranscriptionMetadata",
                "transcriptionMetadata": {
                    "subscriptionId": self.call_id,
                    "locale": self.transcription_locale,
                    "callConnectionId": self.call_id,
                    "correlationId": self.call_id,
                },
            }
        return {
            "kind": "AudioMetadata",
            "audioMetadata": {
                "subscriptionId": self.call_id,
                "encoding": "PCM",
                "sampleRate": self.sample_rate,
                "channels": 1,
                "length": self._samples_per_frame * 2,
            },
        }

    def _transcription(self, text: str, final: bool) -> dict[str, Any]:
        return {
            "kind": "TranscriptionData",
            "transcriptionData": {
                "text": text,
                "format": "display",
                "confidence": 0.95,
                "offset": 0,
                "duration": 0,
                "words": [{"text": word, "offset": 0, "duration": 0} for word in text.split()],
                "participantRawID": "4:+15550100",
                "resultStatus": "Final" if final else "Intermediate",
            },
        }

    def _audio_frame(self, data: bytes, silent: bool) -> dict[str, Any]:
        return {
            "kind": "AudioData",
            "audioData": {
                "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "participantRawID": "4:+15550100",
                "data": base64.b64encode(data).decode(),
                "silent": silent,
            },
        }

    # --- receiving -------------------------------------------------------------------------------
    def _read(self) -> None:
        assert self._ws is not None
        while not self._stopping.is_set():
            try:
                opcode, data = self._ws.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            except (OSError, websocket.WebSocketException):
                break
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                # Status code (2 bytes) and reason: why the agent ended the stream.
                self._close_reason = data[2:].decode(errors="replace") if len(data) > 2 else ""
                break
            arrived = time.monotonic()
            if len(data) > MAX_INBOUND_FRAME_BYTES:
                self.report.errors.append("agent sent an oversized frame")
                continue
            self._take(data, arrived)
        with self._inbound.changed:
            self._inbound.closed = not self._stopping.is_set()
            self._inbound.changed.notify_all()
        with self._marks_ready:
            self._marks_ready.notify_all()

    def _take(self, text: str | bytes, arrived: float) -> None:
        try:
            message = json.loads(text)
            kind = str(message.get("kind") or message.get("Kind") or "")
        except (ValueError, AttributeError):
            self.report.errors.append("agent sent a frame that is not a JSON object")
            return
        with self._inbound.changed:
            if kind.lower() == "audiodata":
                body = message.get("AudioData") or message.get("audioData") or {}
                data = body.get("Data") or body.get("data") or ""
                self._inbound.audio.append((arrived, base64.b64decode(data)))
            elif kind.lower() == "stopaudio":
                self._inbound.stop_audio.append(arrived)
            self._inbound.changed.notify_all()

    def _to_16k(self, pcm: np.ndarray) -> np.ndarray:
        if self.sample_rate == 16000:
            return pcm
        resampled = soxr.resample(pcm.astype(np.float32) / 32768, self.sample_rate, 16000)
        return (np.clip(resampled, -1, 1) * 32767).astype(np.int16)
