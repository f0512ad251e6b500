"""VOICE_LIVE mode against a local fake Voice Live (a real WebSocket server): session set-up at
ACS's rate, greeting, the caller's audio relayed and answered, barge-in, DTMF, transcripts into
memory, and Voice Live dropping closing the ACS side."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from emulators.speech import synthesize
from settings import get_settings
from tests.support.voice_live import FakeVoiceLive
from voice.handlers import create_handler
from voice.handlers.base import SocketClosed
from voice.history import ConversationHistory
from voice.protocol import inbound_audio, inbound_audio_metadata, inbound_dtmf
from voice.voice_live import VoiceLiveError, realtime_url

RATE = 16000
FRAME = RATE * 20 // 1000 * 2
WAIT_SECS = 30.0


def plain(text: str) -> str:
    """The recogniser writes sentences ("What is the weather today."); compare the words."""
    return " ".join(text.lower().replace(".", " ").split())


class FakeAcsSocket:
    """The ACS side of the media socket, in memory: the test is the caller."""

    def __init__(self) -> None:
        self.inbound: queue.Queue[str | None] = queue.Queue()
        self.sent: list[tuple[float, dict[str, Any]]] = []
        self.closed: tuple[int, str] | None = None
        self._changed = threading.Condition()

    def receive(self, timeout: float | None) -> str | None:
        if self.closed is not None:
            raise SocketClosed
        try:
            message = self.inbound.get(timeout=timeout)
        except queue.Empty:
            return None
        if message is None:
            raise SocketClosed
        return message

    def send(self, message: str) -> None:
        with self._changed:
            self.sent.append((time.monotonic(), json.loads(message)))
            self._changed.notify_all()

    def close(self, code: int, reason: str) -> None:
        with self._changed:
            self.closed = (code, reason)
            self._changed.notify_all()
        self.inbound.put(None)

    def kinds(self) -> list[str]:
        with self._changed:
            return [m["Kind"] for _, m in self.sent]

    def wait_for(self, check, what: str) -> None:
        deadline = time.monotonic() + WAIT_SECS
        with self._changed:
            while not check():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"never saw {what}: {self.kinds()[-20:]}")
                self._changed.wait(0.1)


class Caller:
    """Streams ACS frames at real-time pace from its own thread: speech when asked, silence
    otherwise, as ACS does."""

    def __init__(self, socket: FakeAcsSocket) -> None:
        self.socket = socket
        self.pending: list[bytes] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def say(self, text: str) -> None:
        pcm = synthesize(text, sample_rate=RATE).tobytes()
        pcm += bytes((-len(pcm)) % FRAME)
        with self.lock:
            self.pending += [pcm[i : i + FRAME] for i in range(0, len(pcm), FRAME)]

    def press(self, digit: str) -> None:
        self.socket.inbound.put(inbound_dtmf(digit))

    def _run(self) -> None:
        self.socket.inbound.put(inbound_audio_metadata(RATE, "sub"))
        next_at = time.monotonic()
        while not self.stop.is_set():
            with self.lock:
                frame = self.pending.pop(0) if self.pending else None
            self.socket.inbound.put(inbound_audio(frame or bytes(FRAME), silent=frame is None))
            next_at += 0.02
            self.stop.wait(max(0.0, next_at - time.monotonic()))


@pytest.fixture
def fake_voice_live() -> Iterator[FakeVoiceLive]:
    with FakeVoiceLive() as fake:
        yield fake


@pytest.fixture
def call(fake_voice_live: FakeVoiceLive, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ACS_STREAMING_MODE", "VOICE_LIVE")
    monkeypatch.setenv("AZURE_VOICE_LIVE_ENDPOINT", fake_voice_live.endpoint)
    monkeypatch.setenv("AZURE_VOICE_LIVE_API_KEY", "test-key")
    monkeypatch.setenv("AZURE_VOICE_LIVE_GREETING", "hello world")
    get_settings.cache_clear()
    settings = get_settings()
    socket = FakeAcsSocket()
    memory = ConversationHistory()
    handler = create_handler(
        settings.acs_streaming_mode,
        socket,
        call_id="call-vl",
        settings=settings,
        engines=None,
        memory=memory,
    )
    runner = threading.Thread(target=handler.run, name="test-voice-live-call")
    caller = Caller(socket)
    runner.start()
    caller.thread.start()
    yield handler, socket, caller, memory
    caller.stop.set()
    caller.thread.join(10)
    socket.close(1000, "test over")
    runner.join(WAIT_SECS)
    assert not runner.is_alive()


def test_url_needs_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_VOICE_LIVE_ENDPOINT", raising=False)
    get_settings.cache_clear()
    with pytest.raises(VoiceLiveError, match="AZURE_VOICE_LIVE_ENDPOINT"):
        realtime_url(get_settings())
    monkeypatch.setenv("AZURE_VOICE_LIVE_ENDPOINT", "https://x.services.ai.azure.com/")
    get_settings.cache_clear()
    assert realtime_url(get_settings()).startswith(
        "wss://x.services.ai.azure.com/voice-live/realtime?api-version="
    )


@pytest.mark.slow
def test_relay_greets_answers_and_is_interrupted(call, fake_voice_live: FakeVoiceLive) -> None:
    _, socket, caller, memory = call
    # The session is set to ACS's rate both ways, with Azure's semantic VAD; the key is sent.
    socket.wait_for(lambda: "AudioData" in socket.kinds(), "the greeting's audio")
    session = fake_voice_live.session
    assert session["input_audio_sampling_rate"] == RATE
    assert session["output_audio_format"] == "pcm16_16000hz"
    assert session["turn_detection"]["type"] == "azure_semantic_vad"
    assert fake_voice_live.headers["Api-Key"] == "test-key"
    socket.wait_for(
        lambda: any(m["content"] == "hello world" for m in memory.history), "the greeting in memory"
    )

    # The caller asks; Voice Live hears the relayed audio and answers.
    before = len(socket.sent)
    caller.say("what is the weather today")
    socket.wait_for(
        lambda: "thank you" in " ".join(m["content"] for m in memory.history),
        "the answer played whole",
    )
    assert plain(fake_voice_live.transcripts[0]) == "what is the weather today"
    assert {"role": "user", "content": fake_voice_live.transcripts[0]} in memory.history
    assert socket.kinds()[before:].count("AudioData") > 50  # ~2 s of reply at 20 ms a frame
    assert "StopAudio" not in socket.kinds()

    # Barge-in: the caller speaks over the next answer: StopAudio, then no more of that reply.
    caller.say("what is the weather today")
    socket.wait_for(lambda: len(fake_voice_live.transcripts) == 2, "the second question")
    replying = len(socket.sent)
    # Over a second into the ~2.5 s answer, so some words of it were heard.
    socket.wait_for(lambda: socket.kinds()[replying:].count("AudioData") > 60, "the second answer")
    caller.say("goodbye")
    socket.wait_for(lambda: "StopAudio" in socket.kinds(), "StopAudio")
    stop_at = socket.kinds().index("StopAudio")
    # The interrupted reply's remaining audio never reaches the caller; the next audio is the
    # answer to "goodbye" (a new response after its transcript).
    socket.wait_for(lambda: len(fake_voice_live.transcripts) == 3, "the interruption transcribed")
    assert plain(fake_voice_live.transcripts[2]) == "goodbye"
    # Nothing of the interrupted reply follows StopAudio: the next audio is the new answer.
    stale = [m for t, m in socket.sent[stop_at + 1 :] if t < fake_voice_live.transcribed_at[2]]
    assert stale == []
    interrupted = [m["content"] for m in memory.history if m["role"] == "assistant"][2]
    assert interrupted and "thank you for calling the support line".startswith(interrupted)
    assert interrupted != "thank you for calling the support line"
    assert stop_at > replying

    # DTMF is forwarded as a user message and answered.
    caller.press("5")
    socket.wait_for(
        lambda: any("pressed a key" in m["content"] for m in memory.history), "the DTMF answer"
    )
    assert any(
        e["type"] == "conversation.item.create" and "key 5" in e["item"]["content"][0]["text"]
        for e in fake_voice_live.events
    )


@pytest.mark.slow
def test_voice_live_dropping_closes_the_acs_side(call, fake_voice_live: FakeVoiceLive) -> None:
    _, socket, _, _ = call
    socket.wait_for(lambda: "AudioData" in socket.kinds(), "the greeting")
    fake_voice_live.drop()
    socket.wait_for(lambda: socket.closed is not None, "the ACS socket closed")
    assert socket.closed == (1011, "voice live disconnected")


def test_voice_live_unreachable_closes_the_acs_side(monkeypatch: pytest.MonkeyPatch) -> None:
    from settings.redis_server import free_port

    monkeypatch.setenv("AZURE_VOICE_LIVE_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AZURE_VOICE_LIVE_API_KEY", "k")
    get_settings.cache_clear()
    socket = FakeAcsSocket()
    handler = create_handler(
        "VOICE_LIVE", socket, call_id="c", settings=get_settings(), engines=None
    )
    handler.run()
    assert socket.closed == (1011, "voice live unreachable")
