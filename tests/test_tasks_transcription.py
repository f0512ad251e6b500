"""Whisper transcription against the emulator (pocketsphinx behind Azure's API), with speech
synthesised by espeak-ng; long recordings through real workers, chunked and merged."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest

from emulators.speech import wav_bytes
from quota import QuotaLimiter
from tasks.ai_tasks import transcribe_audio
from tasks.connections import redis_client
from tasks.errors import InvalidInput
from tasks.transcription import (
    get_rate_limit_stats,
    merge_chunk_results,
    prepare_transcription,
    set_rate_limit,
    transcribe_chunk,
)
from tests.support.audio import compressed
from tests.support.processors import run_message
from tests.support.speech import known_phrases

WHISPER = "whisper"
LIMITS = {WHISPER: {"tpm": 0, "rpm": 600}}
# Long recordings are cut into chunks of at most this many seconds (small, so a 3-minute
# recording becomes several chunks transcribed at once).
CHUNK_SECS = "30"
PAUSE_SECS = 0.7
RESULT_TIMEOUT_SECS = 240


@pytest.fixture(scope="module")
def emulator(module_emulator_starter):
    return module_emulator_starter(limits=LIMITS)


@pytest.fixture(scope="module")
def short_wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "short.wav"
    path.write_bytes(wav_bytes(known_phrases(8, PAUSE_SECS)))
    return path


@pytest.fixture(scope="module")
def three_minutes_wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "three-minutes.wav"
    path.write_bytes(wav_bytes(known_phrases(180, PAUSE_SECS)))
    return path


@pytest.fixture
def env(emulator, conduit_env, monkeypatch, tmp_path_factory):
    emulator.reset()
    values = {
        **emulator.client_env(),
        "APP_WHISPER_RPM_QUOTA": "600",
        "APP_WHISPER_CHUNK_MAX_SECONDS": CHUNK_SECS,
        # The recordings live under the session's temporary directory.
        "AUDIO_LOCAL_ROOT": str(tmp_path_factory.getbasetemp()),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def whisper_requests(emulator) -> int:
    return emulator.stats()["deployments"].get(WHISPER, {}).get("requests", 0)


def json_answer(answer: dict[str, Any] | str) -> dict[str, Any]:
    """A JSON format's transcript (the return type covers the text formats too)."""
    assert isinstance(answer, dict), answer
    return answer


def text_answer(answer: dict[str, Any] | str) -> str:
    """A text format's transcript (text, srt, vtt)."""
    assert isinstance(answer, str), answer
    return answer


def test_a_short_recording_in_every_format(env, emulator, short_wav):
    verbose = json_answer(transcribe_audio(short_wav, "en", "verbose_json", ["word", "segment"]))
    assert verbose["text"].startswith("What is the weather today.")
    assert verbose["segments"] and verbose["words"]
    assert transcribe_audio(short_wav, response_format="text") == verbose["text"]
    assert transcribe_audio(short_wav) == {"text": verbose["text"]}
    srt = text_answer(transcribe_audio(short_wav, response_format="srt"))
    assert srt.startswith("1\n00:00:00,") and "What is the weather today." in srt
    assert text_answer(transcribe_audio(short_wav, response_format="vtt")).startswith(
        "WEBVTT\n\n00:00:"
    )
    assert whisper_requests(emulator) == 5


def test_bad_audio_is_refused_before_upload(env, emulator, tmp_path):
    renamed = tmp_path / "notes.mp3"
    renamed.write_text("this is a text file\n" * 100)
    too_large = tmp_path / "huge.wav"
    with too_large.open("wb") as file:
        file.write(b"RIFF\x00\x00\x00\x00WAVEfmt ")
        file.truncate(26 * 1024 * 1024)
    unsupported = tmp_path / "voice.ogg"
    unsupported.write_bytes(b"OggS" + bytes(100))
    # An MP4 header in front of text passes the sniff; FFmpeg cannot decode the rest.
    posing = tmp_path / "memo.m4a"
    posing.write_bytes(b"\x00\x00\x00\x1cftypM4A " + b"this is a text file\n" * 100)
    for path, problem in [
        (renamed, "not audio"),
        (too_large, "26.0 MB"),
        (unsupported, "unsupported extension"),
        (posing, "cannot be decoded"),
    ]:
        with pytest.raises(InvalidInput, match=problem):
            transcribe_audio(path)
    with pytest.raises(InvalidInput, match="response_format"):
        transcribe_audio(tmp_path / "missing.wav", response_format="docx")  # type: ignore[arg-type]  # a format that does not exist is what is tested
    assert whisper_requests(emulator) == 0


def test_rate_limit_stats_and_changes_are_shared(env, short_wav, redis_client):
    set_rate_limit(120)
    transcribe_audio(short_wav)
    stats = get_rate_limit_stats()
    assert stats["requests_per_minute"] == 120 and stats["current_requests"] == 1
    assert stats["utilization_percentage"] == pytest.approx(100 / 120)
    # Another process's limiter on the same Redis sees the new limit.
    assert QuotaLimiter(redis_client).status("whisper", WHISPER).rpm == 120


def test_a_short_webm_is_accepted_and_sent_whole(env, emulator, tmp_path):
    clip = tmp_path / "clip.webm"
    clip.write_bytes(compressed(known_phrases(8, PAUSE_SECS), 16000, "webm"))
    answer = text_answer(transcribe_audio(clip, response_format="text"))
    assert answer.startswith("What is the weather today.")
    assert whisper_requests(emulator) == 1


def assert_monotonic(segments, total_s):
    starts = [segment["start"] for segment in segments]
    assert starts == sorted(starts)
    assert all(s["start"] <= s["end"] <= n["start"] + 0.01 for s, n in pairwise(segments))
    assert segments[-1]["end"] > total_s - 10 and segments[-1]["end"] <= total_s + 1


@pytest.mark.slow
def test_a_long_m4a_is_cut_at_silences_and_merged_in_order(env, emulator, tmp_path):
    # In-process, chunk by chunk: the Celery group around these is the three-minute test's.
    speech = known_phrases(60, PAUSE_SECS)
    memo = tmp_path / "memo.m4a"
    memo.write_bytes(compressed(speech, 16000, "m4a"))
    chunks = prepare_transcription(memo, "verbose_json")
    assert chunks is not None and len(chunks) >= 2  # 60 s in chunks of at most 30 s
    merged = json_answer(
        merge_chunk_results(
            [transcribe_chunk(chunk.key, chunk.offset_s) for chunk in chunks], "verbose_json"
        )
    )
    assert_monotonic(merged["segments"], len(speech) / 16000)
    assert merged["text"].startswith("What is the weather today. Hello world.")
    assert whisper_requests(emulator) == len(chunks)


@pytest.mark.slow
def test_three_minutes_are_chunked_transcribed_at_once_and_merged(
    env, emulator, three_minutes_wav, celery_app, start_worker
):
    start_worker(concurrency=6, **env)
    merged = celery_app.send_task(
        "ai.transcribe_audio",
        args=[str(three_minutes_wav), "en", "verbose_json"],
    ).get(timeout=RESULT_TIMEOUT_SECS)
    chunks = whisper_requests(emulator)
    assert chunks >= 6  # 180 s in chunks of at most 30 s
    assert_monotonic(merged["segments"], 180)
    assert merged["text"].startswith("What is the weather today. Hello world.")
    assert "Goodbye." in merged["text"]
    assert not redis_client().keys("conduit:audio-chunk:*")  # parked chunks are dropped

    # The same recording as a `transcribe` message: an SRT counted from the recording's start.
    outcome = run_message(
        celery_app,
        redis_client(),
        "transcribe",
        {
            "id": "a-1",
            "taskId": "t-1",
            "audio_path": str(three_minutes_wav),
            "response_format": "srt",
        },
        in_queue="whisper_iq",
        out_queue="whisper_oq",
        message_id="m-1",
        timeout=RESULT_TIMEOUT_SECS,
    )
    assert outcome["message"] == "SUCCESS", outcome
    cues = outcome["transcript"].strip().split("\n\n")
    assert len(cues) == len(merged["segments"])
    assert cues[-1].splitlines()[1].startswith("00:02:5")
    assert whisper_requests(emulator) == 2 * chunks


@pytest.mark.slow
def test_a_base64_message_is_transcribed_and_bad_audio_answers_failed(
    env, emulator, short_wav, celery_app, start_worker
):
    import base64

    start_worker(concurrency=2, **env)

    def send(body, message_id):
        return run_message(
            celery_app,
            redis_client(),
            "transcribe",
            body,
            in_queue="whisper_iq",
            out_queue="whisper_oq",
            message_id=message_id,
            timeout=RESULT_TIMEOUT_SECS,
        )

    audio = base64.b64encode(short_wav.read_bytes()).decode()
    outcome = send(
        {"id": 1, "audio_base64": audio, "filename": "clip.wav", "response_format": "text"}, "m-b64"
    )
    assert outcome["message"] == "SUCCESS" and outcome["transcript"].startswith("What is")
    text = base64.b64encode(b"not audio at all").decode()
    refused = send({"id": 2, "audio_base64": text, "filename": "clip.wav"}, "m-bad")
    assert refused["message"] == "failed" and "not audio" in refused["error"]["detail"]
    assert whisper_requests(emulator) == 1
