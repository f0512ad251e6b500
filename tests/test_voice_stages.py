"""Each stage of the voice pipeline alone, through the harness, with the real local engines; and
the small sans-I/O pieces (turn detection, clauses, the frame queue, history, latency)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator

import pytest

from settings.config import load_settings
from tests.support.stages import StageHarness
from voice.engines.base import Engines
from voice.engines.local import LocalRecognizer, LocalSynthesizer, SileroVad, WebRtcVad
from voice.frames import (
    AudioIn,
    AudioMetadata,
    Dtmf,
    EndOfCall,
    EndOfTurn,
    Interruption,
    LLMText,
    TTSAudio,
)
from voice.history import ConversationHistory
from voice.latency import LatencySamples, LatencyTool
from voice.pacing import PacedWriter
from voice.pipeline import FrameQueue, Pipeline, Stage
from voice.protocol import outbound_kind
from voice.stages.hearing import HearingStage
from voice.stages.reply import APOLOGY, ReplyStage
from voice.stages.speech import SpeechStage
from voice.turns import TurnDetector

QUESTION = "what is the weather today"


@pytest.fixture(scope="module")
def synthesizer() -> LocalSynthesizer:
    return LocalSynthesizer("en-us")


def speech(synthesizer: LocalSynthesizer, text: str, rate: int = 16000) -> bytes:
    return b"".join(synthesizer.synthesize(text, rate))


def frames_of(pcm: bytes, rate: int = 16000) -> list[AudioIn]:
    size = rate // 50 * 2
    pcm += bytes(-len(pcm) % size)
    return [AudioIn(pcm[i : i + size]) for i in range(0, len(pcm), size)]


# --- sans-I/O pieces -----------------------------------------------------------------------------
def test_turn_detector_needs_start_secs_of_speech_and_stop_secs_of_silence() -> None:
    turns = TurnDetector(start_secs=0.064, stop_secs=0.2)
    assert turns.feed(True, 0.032, 1.0) is None  # one window: a click, not a caller
    assert turns.feed(False, 0.032, 1.032) is None
    assert turns.feed(True, 0.032, 1.064) is None
    assert turns.feed(True, 0.032, 1.096) == "started"
    for step in range(6):  # 0.192 s of silence: a pause between words
        assert turns.feed(False, 0.032, 1.128 + 0.032 * step) is None
    assert turns.feed(True, 0.032, 1.32) is None
    silence = [turns.feed(False, 0.032, 1.352 + 0.032 * step) for step in range(7)]
    assert silence[-1] == "stopped" and silence[:-1] == [None] * 6
    assert turns.speech_ended_at == pytest.approx(1.32)


def test_frame_queue_system_frames_overtake_and_data_is_bounded() -> None:
    queue = FrameQueue(max_data=2)
    assert queue.put(LLMText("a", 1)) and queue.put(LLMText("b", 1))
    assert not queue.put(LLMText("c", 1), timeout=0.05)  # full: the producer waits
    interruption = Interruption(at=0.0)
    assert queue.put(interruption)  # system frames never wait
    assert queue.get(0) is interruption
    assert queue.clear_data() == 2 and queue.get(0) is None


def test_history_is_bounded_by_tokens_keeping_the_newest() -> None:
    memory = ConversationHistory(max_tokens=120)
    for index in range(30):
        memory.append_to_history("user", f"question number {index} about the weather")
        memory.append_to_history("assistant", f"answer number {index}")
    messages = memory.messages("You are terse.")
    assert messages[0] == {"role": "system", "content": "You are terse."}
    assert messages[-1]["content"] == "answer number 29"
    assert 3 < len(messages) < 20
    memory.set_context("dtmf", "12")
    assert memory.get_context("dtmf") == "12" and memory.get_context("x", 5) == 5


def test_latency_tool_turns_percentiles_and_the_older_start_stop(caplog) -> None:
    caplog.set_level(logging.INFO, logger="conduit.voice.latency")
    process = LatencySamples()
    tool = LatencyTool("call-1", process)
    for turn, delay in enumerate([0.1, 0.2, 0.3, 0.4], start=1):
        tool.begin_turn(turn, 100.0)
        tool.mark(turn, "first_frame", 100.0 + delay)
        tool.mark(turn, "first_frame", 200.0)  # only the first time counts
        assert tool.end_turn(turn) == {"first_frame_ms": pytest.approx(delay * 1000)}
    summary = tool.summary()["first_frame_ms"]
    assert summary == {"count": 4, "p50": 200.0, "p95": 400.0}
    assert process.summary()["first_frame_ms"]["count"] == 4
    tool.start("greeting_ttfb")
    assert tool.stop("greeting_ttfb") is not None
    assert tool.stop("never_started") is None
    assert any(getattr(r, "call_id", None) == "call-1" for r in caplog.records)


@pytest.mark.parametrize("vad", [SileroVad, WebRtcVad])
def test_vads_hear_speech_and_not_silence(vad, synthesizer) -> None:
    detector = vad()
    assert not any(detector.windows(bytes(16000)))
    decisions = detector.windows(speech(synthesizer, QUESTION))
    assert sum(decisions) > len(decisions) / 2


# --- stages ---------------------------------------------------------------------------------------
def test_hearing_stage_ends_the_turn_with_the_words_and_the_end_of_speech(synthesizer) -> None:
    engines = Engines(LocalRecognizer([QUESTION, "hello world"]), synthesizer, SileroVad())
    started: list[float] = []
    stage = HearingStage(
        engines, start_secs=0.064, stop_secs=0.2, max_utterance_secs=30,
        on_speech_started=started.append,
    )  # fmt: skip
    with StageHarness(stage) as harness:
        harness.feed(AudioMetadata(sample_rate=24000))
        audio = bytes(24000) + speech(synthesizer, QUESTION, 24000) + bytes(48000)
        before = time.monotonic()
        harness.feed(*frames_of(audio, 24000))
        out = harness.wait_for(lambda frames: any(isinstance(f, EndOfTurn) for f in frames))
    [metadata, end] = out
    assert metadata == AudioMetadata(sample_rate=24000)
    assert isinstance(end, EndOfTurn) and end.text == QUESTION
    assert len(started) == 1 and before <= started[0] <= end.speech_ended_at <= end.final_at
    engines.recognizer.close()


def chat_from(text: str, closed: list[bool]):
    """A chat stream of ``text`` a word at a time; records whether it was closed early."""

    def chat(messages, **options) -> Iterator[str]:
        try:
            for word in text.split(" "):
                yield word + " "
        finally:
            closed.append(True)

    return chat


def reply_stage(chat, turns: list[int], memory=None) -> ReplyStage:
    return ReplyStage(
        memory=memory or ConversationHistory(),
        latency=LatencyTool("t", None),
        chat=chat,
        system_prompt="You are terse.",
        max_tokens=50,
        app_id="voice",
        on_turn_started=turns.append,
    )


def test_reply_stage_sends_clauses_as_they_complete() -> None:
    closed: list[bool] = []
    turns: list[int] = []
    stage = reply_stage(
        chat_from("It is sunny today, with a light breeze. Enjoy it!", closed), turns
    )
    with StageHarness(stage) as harness:
        harness.feed(EndOfTurn(QUESTION, 1.0, 1.2))
        out = harness.wait_for(lambda frames: any(f.last for f in frames))
    # A clause per mark once it has four words; the end of the stream closes the turn (with
    # whatever text is left, here none).
    assert [f.text for f in out] == ["It is sunny today,", "with a light breeze.", "Enjoy it!", ""]
    assert [f.first for f in out] == [True, False, False, False]
    assert [f.last for f in out] == [False, False, False, True]
    assert turns == [1] and closed == [True]
    assert stage.memory.history == [{"role": "user", "content": QUESTION}]


def test_reply_stage_stops_the_stream_on_interruption() -> None:
    closed: list[bool] = []
    release = threading.Event()

    def slow_chat(messages, **options) -> Iterator[str]:
        try:
            yield "First clause here. "
            release.wait(30)
            yield "Second clause, never spoken. "
            yield "More."
        finally:
            closed.append(True)

    stage = reply_stage(slow_chat, [])
    with StageHarness(stage) as harness:
        harness.feed(EndOfTurn(QUESTION, 1.0, 1.2))
        harness.wait_for(lambda frames: len(frames) == 1)
        stage.interrupt(Interruption(at=time.monotonic(), turn=1))
        release.set()
        harness.wait_for(lambda frames: closed == [True])
    assert [f.text for f in harness.frames()] == ["First clause here."]


def test_reply_stage_apologises_when_the_llm_cannot_answer() -> None:
    from tasks.errors import QuotaExhausted

    def refused(messages, **options) -> Iterator[str]:
        raise QuotaExhausted("no quota", 5.0)
        yield ""

    with StageHarness(reply_stage(refused, [])) as harness:
        harness.feed(EndOfTurn(QUESTION, 1.0, 1.2))
        [frame] = harness.wait_for(lambda frames: len(frames) == 1)
    assert frame.text == APOLOGY and frame.last


def test_dtmf_zero_repeats_the_last_answer_and_digits_are_kept() -> None:
    memory = ConversationHistory()
    memory.append_to_history("assistant", "Your order ships today. Anything else?")
    with StageHarness(reply_stage(chat_from("", []), [], memory)) as harness:
        harness.feed(Dtmf("4"), Dtmf("2"), Dtmf("0"))
        out = harness.wait_for(lambda frames: any(f.last for f in frames))
    assert [f.text for f in out] == ["Your order ships today.", "Anything else?"]
    assert memory.get_context("dtmf") == "42"


def test_speech_stage_renders_each_clause_at_the_call_rate(synthesizer) -> None:
    stage = SpeechStage(synthesizer, LatencyTool("t", None))
    with StageHarness(stage) as harness:
        harness.feed(AudioMetadata(sample_rate=24000))
        harness.feed(LLMText("Hello there.", 1, first=True), LLMText("Goodbye.", 1, last=True))
        out = harness.wait_for(
            lambda frames: any(getattr(f, "last_of_turn", False) for f in frames)
        )
    audio = [f for f in out if isinstance(f, TTSAudio)]
    assert [f.text for f in audio] == ["Hello there.", "Goodbye.", ""]
    assert audio[0].clause != audio[1].clause
    # espeak-ng speaks "Hello there." in roughly a second; 24 kHz PCM16 is 48000 bytes a second.
    assert 0.4 < len(audio[0].pcm) / 48000 < 2.0


class Recorder:
    """A socket's send side: every message with when it was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, str, bytes | None]] = []
        self.lock = threading.Lock()

    def __call__(self, message: str) -> None:
        with self.lock:
            self.sent.append((time.monotonic(), *outbound_kind(message)))

    def kinds(self) -> list[str]:
        with self.lock:
            return [kind for _, kind, _ in self.sent]


def writer_with(recorder: Recorder, spoken: list) -> PacedWriter:
    return PacedWriter(
        recorder,
        LatencyTool("t", None),
        lead_secs=0.1,
        on_spoken=lambda turn, text, complete: spoken.append((turn, text, complete)),
    )


def test_writer_paces_frames_in_real_time_and_reports_the_whole_reply() -> None:
    recorder = Recorder()
    spoken: list[tuple[int, str, bool]] = []
    writer = writer_with(recorder, spoken)
    with StageHarness(writer) as harness:
        harness.feed(AudioMetadata(sample_rate=16000))
        harness.feed(TTSAudio(bytes(32000), "one second of reply", 1, 1))  # 50 frames
        harness.feed(TTSAudio(b"", "", 1, 1, last_of_turn=True))
        harness.wait_for(lambda _: bool(spoken))
    times = [at for at, kind, _ in recorder.sent]
    assert recorder.kinds() == ["AudioData"] * 50
    # Never ahead of real time by more than the lead (5 frames): frame i leaves no earlier than
    # (i - 5) frames after the first. Later is allowed (a loaded machine), earlier is a bug.
    for index, at in enumerate(times):
        assert at - times[0] >= (index - 5) * 0.02 - 0.005
    assert spoken == [(1, "one second of reply", True)]


def test_writer_stops_at_once_on_interruption_and_keeps_only_what_was_heard() -> None:
    recorder = Recorder()
    spoken: list[tuple[int, str, bool]] = []
    writer = writer_with(recorder, spoken)
    with StageHarness(writer) as harness:
        harness.feed(AudioMetadata(sample_rate=16000))
        words = "one two three four five six seven eight nine ten"
        harness.feed(TTSAudio(bytes(64000), words, 1, 1))  # two seconds
        harness.feed(TTSAudio(b"", "", 1, 1, last_of_turn=True))
        harness.wait_for(lambda _: len(recorder.kinds()) >= 40)  # ~0.8 s sent (incl. the lead)
        writer.interrupt(Interruption(at=time.monotonic(), turn=1))
        harness.wait_for(lambda _: "StopAudio" in recorder.kinds())
        harness.wait_for(lambda _: bool(spoken))
        # A frame of the interrupted turn that arrives late is dropped, not played.
        harness.feed(TTSAudio(bytes(6400), words, 1, 2))
        harness.feed(EndOfCall())
    kinds = recorder.kinds()
    stop = kinds.index("StopAudio")
    assert kinds[stop + 1 :] == [] and kinds.count("StopAudio") == 1
    [(turn, heard, complete)] = spoken
    assert turn == 1 and not complete
    # Sent minus the lead still buffered at ACS: about 35 of 100 frames, so ~3 of 10 words.
    assert 1 <= len(heard.split()) <= 6 and words.startswith(heard)


def test_pipeline_interruption_drops_queued_work_in_every_stage() -> None:
    class Slow(Stage):
        name = "slow"

        def process_frame(self, frame) -> None:
            time.sleep(0.05)
            self.push(frame)

    received: list = []
    first, second = Slow(), Slow()
    pipeline = Pipeline([first, second])
    second.link(received.append)
    pipeline.start("test")
    try:
        for index in range(20):
            pipeline.put(LLMText(str(index), 1))
        dropped = pipeline.interrupt(Interruption(at=time.monotonic(), turn=1))
        assert dropped >= 10
    finally:
        pipeline.stop()
    assert len([f for f in received if isinstance(f, LLMText)]) <= 3
    assert not pipeline.errors


def test_settings_name_the_voice_variables() -> None:
    settings = load_settings()
    assert settings.acs_streaming_mode == "MEDIA" and settings.voice_engine == "local"
    assert json.loads(json.dumps(settings.vad_stop_secs)) == 0.2


def test_transcription_stage_barges_in_on_intermediates_and_ends_turns_on_finals() -> None:
    from voice.frames import TranscriptionIn
    from voice.stages.transcription import TranscriptionStage

    started: list[float] = []
    with StageHarness(TranscriptionStage(on_speech_started=started.append)) as harness:
        harness.feed(
            TranscriptionIn("what is", final=False),
            TranscriptionIn("what is the", final=False),
            TranscriptionIn(QUESTION, final=True),
            AudioIn(bytes(640)),  # audio is not heard in this mode
            TranscriptionIn("", final=True),  # nothing said: no turn
        )
        out = harness.wait_for(lambda frames: any(isinstance(f, EndOfTurn) for f in frames))
    metadata, end = out
    # No AudioMetadata comes in this mode: the agent speaks 16 kHz.
    assert metadata == AudioMetadata(sample_rate=16000)
    assert isinstance(end, EndOfTurn) and end.text == QUESTION
    assert len(started) == 1  # once per utterance, on its first intermediate


def test_speech_stage_renders_later_clauses_just_in_time(synthesizer) -> None:
    buffered = [5.0]  # seconds of the reply still to play, as the writer would report
    stage = SpeechStage(synthesizer, LatencyTool("t", None), buffered_secs=lambda: buffered[0])
    with StageHarness(stage) as harness:
        harness.feed(LLMText("First words.", 1, first=True), LLMText("Then more.", 1, last=True))
        harness.wait_for(lambda frames: len(frames) == 1)  # the first clause at once
        time.sleep(0.2)
        assert len(harness.frames()) == 1  # the second waits while 5 s are left to play
        buffered[0] = 0.5
        out = harness.wait_for(lambda frames: any(f.last_of_turn for f in frames))
    assert [f.text for f in out] == ["First words.", "Then more.", ""]
