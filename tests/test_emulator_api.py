"""The emulator through the real openai SDK over HTTP: chat, embeddings, Whisper, errors.

One emulator serves the whole module (starting one per test would cost more than the tests);
tests that change limits, keys or faults start their own in test_emulator_limits.py.
"""

from __future__ import annotations

import base64
import enum
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall
from pydantic import BaseModel, Field

from emulators.speech import synthesize, wav_bytes
from settings.tiktoken_offline import encoding_for_model
from tests.support.audio import COMPRESSED_FORMATS, compressed
from tests.support.emulator import EmulatorStarter, RunningEmulator, ask, present

pytestmark = pytest.mark.slow

CHAT = "gpt-4o"
EMBEDDING = "text-embedding-3-large"
WHISPER = "whisper"
# Roomy limits: these tests are about answers; test_emulator_limits.py is about limits.
ROOMY_LIMITS = {
    CHAT: {"tpm": 10_000_000, "rpm": 60_000},
    EMBEDDING: {"tpm": 10_000_000, "rpm": 60_000},
    WHISPER: {"rpm": 6_000},
}


@pytest.fixture(scope="module")
def emulator(
    tiktoken_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningEmulator]:
    starter = EmulatorStarter(
        tmp_path_factory.mktemp("emulator"), {"TIKTOKEN_CACHE_DIR": str(tiktoken_cache)}
    )
    yield starter(limits=ROOMY_LIMITS)
    starter.close()


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


# --- chat -----------------------------------------------------------------------------------------


def test_chat_answers_deterministically_with_counted_usage(emulator: RunningEmulator) -> None:
    client = emulator.azure_client()
    first = client.chat.completions.create(model=CHAT, messages=ask("How was the delivery?"))
    again = client.chat.completions.create(model=CHAT, messages=ask("How was the delivery?"))

    content = first.choices[0].message.content
    assert content and content == again.choices[0].message.content
    assert first.choices[0].finish_reason == "stop"
    usage = present(first.usage, "usage")
    assert usage.completion_tokens == len(encoding_for_model(CHAT).encode(content))
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_honours_max_tokens_stop_n_and_temperature(emulator: RunningEmulator) -> None:
    client = emulator.openai_client()
    cut = client.chat.completions.create(model=CHAT, messages=ask("Describe it"), max_tokens=5)
    assert cut.choices[0].finish_reason == "length"
    assert present(cut.usage, "usage").completion_tokens == 5

    full = client.chat.completions.create(model=CHAT, messages=ask("Describe it")).choices[0]
    full_text = present(full.message.content, "content")
    stop_word = full_text.split()[3]
    stopped = client.chat.completions.create(
        model=CHAT, messages=ask("Describe it"), stop=[f" {stop_word}"]
    )
    assert stopped.choices[0].message.content == full_text.split(f" {stop_word}")[0]

    varied = client.chat.completions.create(model=CHAT, messages=ask("Hi"), n=3, temperature=1)
    greedy = client.chat.completions.create(model=CHAT, messages=ask("Hi"), n=3, temperature=0)
    assert len({choice.message.content for choice in varied.choices}) == 3
    assert len({choice.message.content for choice in greedy.choices}) == 1


def test_streamed_chat_matches_the_plain_answer_and_reports_usage(
    emulator: RunningEmulator,
) -> None:
    client = emulator.azure_client()
    plain = client.chat.completions.create(model=CHAT, messages=ask("Stream this"))
    stream = client.chat.completions.create(
        model=CHAT, messages=ask("Stream this"), stream=True, stream_options={"include_usage": True}
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:  # Azure's first chunk has no choices
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == plain.choices[0].message.content
    assert finish == "stop"
    assert usage is not None
    assert usage.completion_tokens == present(plain.usage, "usage").completion_tokens


class Sentiment(enum.StrEnum):
    POSITIVE = "positive"
    NEGATIVE = "negative"


class Topic(BaseModel):
    name: str = Field(min_length=3)
    weight: float = Field(ge=0, le=1)
    mentions: int = Field(ge=1, le=10)


class Feedback(BaseModel):
    sentiment: Sentiment
    topics: list[Topic]
    summary: str
    urgent: bool
    follow_up: Topic | None


def test_parse_returns_a_valid_pydantic_model(emulator: RunningEmulator) -> None:
    client = emulator.azure_client()
    for attempt in range(5):  # different seeds take different branches of the schema
        completion = client.chat.completions.parse(
            model=CHAT,
            messages=ask("The box was damaged"),
            response_format=Feedback,
            seed=attempt,
        )
        parsed = completion.choices[0].message.parsed
        assert isinstance(parsed, Feedback)
        assert all(0 <= topic.weight <= 1 and len(topic.name) >= 3 for topic in parsed.topics)


class WeatherQuery(BaseModel):
    city: str = Field(min_length=2)
    days: int = Field(ge=1, le=7)
    unit: Sentiment


def test_a_required_tool_call_has_schema_valid_arguments(emulator: RunningEmulator) -> None:
    client = emulator.openai_client()
    completion = client.chat.completions.create(
        model=CHAT,
        messages=ask("Weather in Oslo?"),
        tool_choice="required",
        tools=[openai.pydantic_function_tool(WeatherQuery, name="get_weather")],
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = present(choice.message.tool_calls, "tool calls")[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "get_weather"
    WeatherQuery.model_validate_json(call.function.arguments)


def test_json_object_mode_answers_a_json_object(emulator: RunningEmulator) -> None:
    completion = emulator.azure_client().chat.completions.create(
        model=CHAT, messages=ask("Answer in JSON"), response_format={"type": "json_object"}
    )
    assert present(completion.choices[0].message.content, "content").startswith("{")


# --- embeddings -----------------------------------------------------------------------------------


def test_embeddings_are_normalised_and_closer_for_shared_words(emulator: RunningEmulator) -> None:
    client = emulator.azure_client()
    single = client.embeddings.create(model=EMBEDDING, input="the parcel arrived late")
    assert len(single.data[0].embedding) == 3072

    batch = client.embeddings.create(
        model=EMBEDDING,
        dimensions=256,
        encoding_format="float",
        input=["the parcel arrived late", "my parcel arrived damaged", "quantum field theory"],
    )
    vectors = [np.array(item.embedding) for item in batch.data]
    assert all(len(vector) == 256 for vector in vectors)
    assert np.allclose([np.linalg.norm(vector) for vector in vectors], 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert batch.usage.prompt_tokens > 0


def test_base64_embeddings_decode_to_the_float_ones(emulator: RunningEmulator) -> None:
    body = {"model": EMBEDDING, "input": "same text", "dimensions": 64}
    headers = {"api-key": emulator.api_key}
    floats = httpx.post(
        f"{emulator.url}/v1/embeddings", headers=headers, json=body | {"encoding_format": "float"}
    ).json()
    packed = httpx.post(
        f"{emulator.url}/v1/embeddings", headers=headers, json=body | {"encoding_format": "base64"}
    ).json()
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype=np.float32)
    assert np.allclose(decoded, floats["data"][0]["embedding"])


def test_embeddings_over_azure_limits_are_refused(emulator: RunningEmulator) -> None:
    client = emulator.azure_client()
    with pytest.raises(openai.BadRequestError, match="Too many inputs"):
        client.embeddings.create(model=EMBEDDING, input=["word"] * 2049)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.embeddings.create(model=EMBEDDING, input="hello " * 9000)


# --- Whisper --------------------------------------------------------------------------------------


def spoken(text: str) -> tuple[str, bytes, str]:
    return ("speech.wav", wav_bytes(synthesize(text, voice="en-us+m3")), "audio/wav")


def test_transcription_returns_the_words_spoken(emulator: RunningEmulator) -> None:
    client = emulator.azure_client()
    result = client.audio.transcriptions.create(
        model=WHISPER,
        file=spoken("what is the weather today"),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert words_of(result.text) == ["what", "is", "the", "weather", "today"]
    assert [word.word for word in present(result.words, "words")] == words_of(result.text)
    segment = present(result.segments, "segments")[0]
    assert 0 <= segment.start < segment.end <= result.duration


def test_srt_and_vtt_have_one_timed_cue_per_sentence(emulator: RunningEmulator) -> None:
    client = emulator.openai_client()
    audio = spoken("hello world. thank you very much.")
    srt = client.audio.transcriptions.create(model=WHISPER, file=audio, response_format="srt")
    vtt = client.audio.transcriptions.create(model=WHISPER, file=audio, response_format="vtt")

    srt_cue = r"(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+)\n"
    cues = re.findall(srt_cue, srt)
    assert [(number, text) for number, _, _, text in cues] == [
        ("1", "Hello world."),
        ("2", "Thank you very much."),
    ]
    assert cues[0][1] < cues[0][2] <= cues[1][1] < cues[1][2]
    assert vtt.startswith("WEBVTT\n\n")
    assert re.findall(r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}\n(.+)\n", vtt) == [
        "Hello world.",
        "Thank you very much.",
    ]


def test_translation_of_english_speech_is_its_transcript(emulator: RunningEmulator) -> None:
    # The SDK deprecates audio.translations; the route is still Azure's, so call it directly.
    response = httpx.post(
        f"{emulator.url}/openai/deployments/{WHISPER}/audio/translations?api-version=2024-10-21",
        headers={"api-key": emulator.api_key},
        files={"file": spoken("thank you very much")},
        data={"response_format": "text"},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.text == "Thank you very much.\n"


def test_audio_over_25_mb_is_refused_with_413(emulator: RunningEmulator) -> None:
    oversize = ("big.wav", b"\0" * (25 * 1024 * 1024 + 1), "audio/wav")
    with pytest.raises(openai.APIStatusError) as refused:
        emulator.azure_client().audio.transcriptions.create(model=WHISPER, file=oversize)
    assert refused.value.status_code == 413
    assert "Maximum content size limit" in refused.value.message


# Last of the Whisper tests: espeak-ng's audio varies slightly with what it spoke before, and
# more speech ahead of the SRT test changed what pocketsphinx heard there.
@pytest.mark.parametrize("extension", sorted(COMPRESSED_FORMATS))
def test_m4a_and_webm_uploads_are_decoded_without_ffmpeg(
    emulator: RunningEmulator, extension: str
) -> None:
    rate = 48000  # what phones and browsers record at: the emulator resamples it
    audio = compressed(synthesize("what is the weather today", sample_rate=rate), rate, extension)
    result = emulator.azure_client().audio.transcriptions.create(
        model=WHISPER, file=(f"speech.{extension}", audio)
    )
    assert words_of(result.text) == ["what", "is", "the", "weather", "today"]


# --- errors ---------------------------------------------------------------------------------------


def test_a_request_without_a_key_gets_azures_401(emulator: RunningEmulator) -> None:
    response = httpx.post(
        f"{emulator.url}/openai/deployments/{CHAT}/chat/completions?api-version=2024-10-21",
        json={"messages": ask("hi")},
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "401"
    assert "Access denied" in response.json()["error"]["message"]


def test_an_unknown_deployment_is_not_found(emulator: RunningEmulator) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        emulator.azure_client().chat.completions.create(model="no-such", messages=ask("hi"))
