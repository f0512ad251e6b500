"""tasks/ logic that needs no server: prompts, estimates, batching, audio checks, transcripts."""

from __future__ import annotations

import httpx2
import pytest
from openai import AzureOpenAI, OpenAI

from settings import load_settings
from tasks.audio_chunks import max_chunk_seconds, plan_cuts
from tasks.audio_files import MAX_UPLOAD_BYTES, sniff_container, validate_audio_file
from tasks.clients import client_for, completion_endpoint, embedding_endpoint, whisper_endpoint
from tasks.embedding import plan_batches
from tasks.errors import InvalidInput
from tasks.prompts import format_prompt
from tasks.token_estimates import estimate_tokens, prompt_tokens
from tasks.transcripts import merge_transcripts, render
from tasks.upstream import retry_after_s


def test_format_prompt_fills_variables_and_keeps_other_braces():
    messages = format_prompt(
        'Answer as JSON like {"score": 1} in {lang}.',
        "Rate: {text}",
        {"lang": "English", "text": "great {product}!"},
        examples=[{"user": "Rate: bad", "assistant": '{"score": 0}'}],
    )
    assert messages == [
        {"role": "system", "content": 'Answer as JSON like {"score": 1} in English.'},
        {"role": "user", "content": "Rate: bad"},
        {"role": "assistant", "content": '{"score": 0}'},
        {"role": "user", "content": "Rate: great {product}!"},
    ]


def test_a_missing_variable_is_named():
    with pytest.raises(InvalidInput, match=r"user_prompt uses variable\(s\) topic"):
        format_prompt("sys", "Tell me about {topic}.", {"other": 1})
    with pytest.raises(InvalidInput, match=r"examples\[0\]"):
        format_prompt("sys", "hi", examples=[{"user": "only half"}])


def test_estimate_is_prompt_plus_max_tokens(tiktoken_cache):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello <|endoftext|> there", "name": "ann"},
    ]
    assert estimate_tokens(messages, "gpt-4o", 100) == prompt_tokens(messages, "gpt-4o") + 100
    assert prompt_tokens(
        [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "gpt-4o"
    ) == prompt_tokens([{"role": "user", "content": "hi"}], "gpt-4o")


def test_batches_respect_count_and_tokens():
    assert [list(b) for b in plan_batches([1] * 5, max_count=2, max_tokens=100)] == [
        [0, 1],
        [2, 3],
        [4],
    ]
    assert [list(b) for b in plan_batches([60, 60, 30, 200], max_count=10, max_tokens=100)] == [
        [0],
        [1, 2],
        [3],
    ]


def test_cuts_fall_in_pauses_and_respect_the_limit():
    sounds = [(0.0, 4.0), (5.0, 9.0), (9.5, 14.0), (16.0, 20.0)]
    spans = plan_cuts(sounds, total_s=21.0, max_chunk_s=10.0)
    assert spans == [(0.0, 9.25), (9.25, 15.0), (15.0, 21.0)]
    assert all(end - start <= 10.0 for start, end in spans)
    # Speech with no pause at all is cut at the limit.
    assert plan_cuts([(0.0, 25.0)], 25.0, 10.0) == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]
    assert max_chunk_seconds(10_000) * 32_000 < MAX_UPLOAD_BYTES


def test_containers_are_sniffed():
    assert sniff_container(b"RIFF\x00\x00\x00\x00WAVEfmt ") == "wave"
    assert sniff_container(b"ID3\x04") == "mpeg-audio"
    assert sniff_container(b"\xff\xfb\x90\x00") == "mpeg-audio"
    assert sniff_container(b"\x00\x00\x00\x20ftypM4A ") == "mp4"
    assert sniff_container(b"\x1a\x45\xdf\xa3") == "webm"
    assert sniff_container(b"hello, world") is None


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("notes.wav", b"just some text, renamed", "content is not audio"),
        ("speech.mp3", b"RIFF\x00\x00\x00\x00WAVEfmt ", "named .mp3 but its content is wave"),
        ("speech.ogg", b"OggS", "unsupported extension"),
        ("empty.wav", b"", "is empty"),
    ],
)
def test_bad_audio_is_refused(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidInput, match=problem):
        validate_audio_file(path)


def test_audio_over_25_mb_is_refused(tmp_path):
    path = tmp_path / "long.wav"
    with path.open("wb") as file:
        file.write(b"RIFF\x00\x00\x00\x00WAVEfmt ")
        file.truncate(26 * 1024 * 1024)
    with pytest.raises(InvalidInput, match=r"26\.0 MB; Whisper accepts at most 25 MB"):
        validate_audio_file(path)


def _part(text, *segments, language="english", duration=10.0):
    return {
        "text": text,
        "language": language,
        "duration": duration,
        "segments": [
            {"id": n, "start": s, "end": e, "text": t} for n, (s, e, t) in enumerate(segments)
        ],
        "words": [{"word": t.split()[0], "start": s, "end": s + 0.5} for s, _, t in segments],
    }


def test_chunks_merge_with_their_offsets():
    merged = merge_transcripts(
        [
            (0.0, _part("Hello world.", (0.5, 2.0, " Hello world."))),
            (
                9.25,
                _part("Thank you. Goodbye.", (0.2, 1.5, " Thank you."), (3.0, 4.0, " Goodbye.")),
            ),
        ]
    )
    assert merged["text"] == "Hello world. Thank you. Goodbye."
    assert [(s["id"], s["start"], s["end"]) for s in merged["segments"]] == [
        (0, 0.5, 2.0),
        (1, 9.45, 10.75),
        (2, 12.25, 13.25),
    ]
    assert [w["start"] for w in merged["words"]] == [0.5, 9.45, 12.25]
    assert merged["duration"] == 19.25
    assert render(merged, "text") == merged["text"]
    assert render(merged, "json") == {"text": merged["text"]}
    srt, vtt_text = render(merged, "srt"), render(merged, "vtt")
    assert isinstance(srt, str) and isinstance(vtt_text, str)
    assert srt.splitlines()[:3] == [
        "1",
        "00:00:00,500 --> 00:00:02,000",
        "Hello world.",
    ]
    vtt = vtt_text.splitlines()
    assert vtt[0] == "WEBVTT" and "00:00:12.250 --> 00:00:13.250" in vtt


def test_retry_after_prefers_milliseconds():
    assert retry_after_s(httpx2.Headers({"retry-after-ms": "1500", "retry-after": "2"})) == 1.5
    assert retry_after_s(httpx2.Headers({"retry-after": "3"})) == 3.0
    assert retry_after_s(httpx2.Headers({})) is None


def test_clients_follow_settings(monkeypatch):
    monkeypatch.setenv("EMULATOR_PORT", "8799")
    embedded = load_settings()
    endpoint = completion_endpoint(embedded)
    assert endpoint.base_url == "http://127.0.0.1:8799" and endpoint.api_key == "conduit-dev"
    assert client_for(endpoint) is client_for(completion_endpoint(load_settings()))
    assert client_for(endpoint).max_retries == 0

    azure = load_settings(
        openai_api_base="https://example.openai.azure.com",
        whisper_api_base="https://speech.openai.azure.com",
        embedding_api_base="https://vectors.openai.azure.com",
        embedding_api_key="embedding-key",
    )
    entra = client_for(completion_endpoint(azure))
    assert isinstance(entra, AzureOpenAI) and completion_endpoint(azure).api_key is None
    assert whisper_endpoint(azure).base_url == "https://speech.openai.azure.com"
    assert embedding_endpoint(azure).api_key == "embedding-key"

    compatible = load_settings(
        openai_api_base="http://127.0.0.1:11434/v1", openai_client_kind="openai"
    )
    client = client_for(completion_endpoint(compatible))
    assert type(client) is OpenAI and str(client.base_url) == "http://127.0.0.1:11434/v1/"
