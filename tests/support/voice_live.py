"""A local fake of Azure Voice Live for tests: a real WebSocket server speaking its events.

It does what the relay depends on, for real and at its own pace: answers ``session.update``,
speaks a greeting on the first ``response.create``, detects the caller's speech in the appended
audio by energy (``input_audio_buffer.speech_started`` / ``speech_stopped``), transcribes the
utterance with the local recogniser (``conversation.item.input_audio_transcription.completed``),
and answers with espeak-ng audio in ``response.audio.delta`` chunks (faster than real time, as the
service sends) plus its transcript. Speech while it answers cancels the answer (server VAD).
``drop()`` closes the connection from the server side.

    with FakeVoiceLive() as fake:
        settings: AZURE_VOICE_LIVE_ENDPOINT=fake.endpoint
        ... fake.events (client events received), fake.session (the last session.update)
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from typing import Any

import numpy as np
from flask import Flask
from flask_sock import Sock
from werkzeug.serving import make_server

from emulators.recognizer import DEFAULT_PHRASES_FILE, Recognizer, read_phrases
from emulators.speech import synthesize
from settings.redis_server import free_port

# Loudness above which a 20 ms window counts as speech (espeak speech is far above, silence 0).
SPEECH_RMS = 500.0
# Silence that ends the caller's utterance (azure_semantic_vad's silence_duration_ms role).
END_SILENCE_SECS = 0.3
# Audio per response.audio.delta, and how fast chunks are sent (faster than real time).
CHUNK_SECS = 0.1
CHUNK_INTERVAL_SECS = 0.03
RATES = {"pcm16_16000hz": 16000, "pcm16": 24000, "pcm16_8000hz": 8000}


class FakeVoiceLive:
    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.events: list[dict[str, Any]] = []
        self.session: dict[str, Any] = {}
        self.transcripts: list[str] = []
        self.transcribed_at: list[float] = []  # monotonic
        self.cancelled: list[str] = []
        self.headers: dict[str, str] = {}
        self._drop = threading.Event()
        self._recognizer = Recognizer(read_phrases(DEFAULT_PHRASES_FILE))
        app = Flask("fake-voice-live")
        Sock(app).route("/voice-live/realtime")(self._serve)
        self._server = make_server("127.0.0.1", self.port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def event_types(self) -> list[str]:
        return [event["type"] for event in self.events]

    def drop(self) -> None:
        self._drop.set()

    def __enter__(self) -> FakeVoiceLive:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._drop.set()
        self._server.shutdown()
        self._thread.join(10)

    # --- one connection --------------------------------------------------------------------------
    def _serve(self, ws: Any) -> None:
        from flask import request

        self.headers = dict(request.headers)
        state = _Connection(self, ws)
        state.send({"type": "session.created", "session": {"id": uuid.uuid4().hex}})
        while ws.connected and not self._drop.is_set():
            message = ws.receive(timeout=0.01)
            if message is not None:
                event = json.loads(message)
                self.events.append(event)
                state.on_event(event)
            state.tick()
        ws.close()


class _Connection:
    def __init__(self, fake: FakeVoiceLive, ws: Any) -> None:
        self.fake, self.ws = fake, ws
        self.in_rate, self.out_rate = 24000, 24000
        self.heard: list[np.ndarray] = []
        self.speaking = False
        self.last_speech = 0.0
        self.response: str | None = None
        self.outbox: list[dict[str, Any]] = []
        self.next_send = 0.0
        self.greeted = False

    def send(self, event: dict[str, Any]) -> None:
        self.ws.send(json.dumps(event))

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "session.update":
            session = event["session"]
            self.fake.session = session
            self.in_rate = int(session.get("input_audio_sampling_rate", 24000))
            self.out_rate = RATES[session.get("output_audio_format", "pcm16")]
            self.send({"type": "session.updated", "session": session})
        elif kind == "response.create":
            instructions = (event.get("response") or {}).get("instructions", "")
            if not self.greeted and "exactly:" in instructions:
                self.greeted = True
                self._respond(instructions.split("exactly:", 1)[1].strip())
            else:
                self._respond("you pressed a key")
        elif kind == "response.cancel":
            self._cancel("client")
        elif kind == "input_audio_buffer.append":
            pcm = np.frombuffer(base64.b64decode(event["audio"]), dtype=np.int16)
            self._hear(pcm)

    def _hear(self, pcm: np.ndarray) -> None:
        now = time.monotonic()
        loud = pcm.size > 0 and float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) > SPEECH_RMS
        if loud:
            if not self.speaking:
                self.speaking = True
                self.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0})
                self._cancel("speech")
            self.last_speech = now
        if self.speaking:
            self.heard.append(pcm)
            if not loud and now - self.last_speech >= END_SILENCE_SECS:
                self.speaking = False
                self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 0})
                audio = np.concatenate(self.heard)
                self.heard = []
                if self.in_rate != 16000:
                    import soxr

                    audio = (
                        soxr.resample(audio.astype(np.float32) / 32768, self.in_rate, 16000) * 32767
                    ).astype(np.int16)
                text = self.fake._recognizer.transcribe(audio).text
                self.fake.transcripts.append(text)
                self.fake.transcribed_at.append(time.monotonic())
                self.send(
                    {
                        "type": "conversation.item.input_audio_transcription.completed",
                        "item_id": uuid.uuid4().hex,
                        "transcript": text,
                    }
                )
                self._respond("thank you for calling the support line")

    def _respond(self, text: str) -> None:
        self._cancel("new response")
        response_id = uuid.uuid4().hex
        self.response = response_id
        self.send(
            {"type": "response.created", "response": {"id": response_id, "status": "in_progress"}}
        )
        pcm = synthesize(text, sample_rate=self.out_rate).tobytes()
        chunk = int(self.out_rate * CHUNK_SECS) * 2
        words = text.split()
        chunks = [pcm[i : i + chunk] for i in range(0, len(pcm), chunk)]
        for index, data in enumerate(chunks):
            share = words[
                len(words) * index // len(chunks) : len(words) * (index + 1) // len(chunks)
            ]
            if share:
                self.outbox.append(
                    {
                        "type": "response.audio_transcript.delta",
                        "response_id": response_id,
                        "delta": " ".join(share) + " ",
                    }
                )
            self.outbox.append(
                {
                    "type": "response.audio.delta",
                    "response_id": response_id,
                    "delta": base64.b64encode(data).decode(),
                }
            )
        self.outbox.append({"type": "response.audio.done", "response_id": response_id})
        self.outbox.append(
            {"type": "response.done", "response": {"id": response_id, "status": "completed"}}
        )

    def _cancel(self, why: str) -> None:
        if self.response is None:
            return
        self.fake.cancelled.append(why)
        cancelled, self.response = self.response, None
        self.outbox = []
        self.send({"type": "response.done", "response": {"id": cancelled, "status": "cancelled"}})

    def tick(self) -> None:
        now = time.monotonic()
        if not self.outbox or now < self.next_send:
            return
        # A transcript delta goes with the audio chunk after it.
        while self.outbox:
            event = self.outbox.pop(0)
            self.send(event)
            if event["type"] == "response.done":
                self.response = None
            if event["type"] == "response.audio.delta":
                break
        self.next_send = now + CHUNK_INTERVAL_SECS
