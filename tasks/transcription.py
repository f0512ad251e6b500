"""Whisper transcription inside the Whisper request quota: the older ``AzureOpenAIServiceWhisper``
methods as plain functions.

A recording is validated before anything is uploaded (tasks/audio_files.py). One no longer than
APP_WHISPER_CHUNK_MAX_SECONDS is sent whole; a longer one is cut at silences
(tasks/audio_chunks.py), its chunks parked in Redis where any worker can fetch them, transcribed
at once by a Celery group (tasks/ai_tasks.py) and merged with their offsets
(tasks/transcripts.py). Every upload asks Whisper for ``verbose_json``, so times are always
known and the requested format is rendered here, identically for whole and chunked recordings.

The Celery side (chunk tasks, the chord that merges them, and ``transcribe_audio``, which reads
a recording inside AUDIO_LOCAL_ROOT and waits for its chunks) is tasks/ai_tasks.py; this module
knows nothing of Celery.

Rate limiting is quota/'s ``whisper`` pool (requests per minute, shared by every worker):
:func:`get_rate_limit_stats` reads it and :func:`set_rate_limit` changes it for all of them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from settings import get_settings
from tasks.audio_chunks import duration_s, split_at_silences
from tasks.audio_files import validate_audio_file
from tasks.connections import quota_limiter, redis_bytes_client
from tasks.errors import InvalidInput, PermanentError
from tasks.transcripts import (
    RESPONSE_FORMATS,
    ResponseFormat,
    Transcript,
    merge_transcripts,
    render,
)
from tasks.upstream import QuotaCall, Usage, call_within_quota

Granularity = Literal["word", "segment"]
CHUNK_KEY_PREFIX = "conduit:audio-chunk"


@dataclass(frozen=True)
class ChunkRef:
    """A chunk parked in Redis for a chunk task: small enough to travel in a task message."""

    key: str
    offset_s: float


def _check_options(response_format: str, timestamp_granularities: Sequence[str]) -> None:
    if response_format not in RESPONSE_FORMATS:
        raise InvalidInput(
            f"response_format {response_format!r} is not one of {', '.join(RESPONSE_FORMATS)}"
        )
    unknown = set(timestamp_granularities) - {"word", "segment"}
    if unknown:
        raise InvalidInput(
            f"timestamp_granularities {sorted(unknown)} are unknown: use 'word' and/or 'segment'"
        )


def transcribe_upload(
    filename: str,
    audio: bytes,
    language: str | None = None,
    timestamp_granularities: Sequence[Granularity] = (),
    *,
    app_id: str | None = None,
) -> Transcript:
    """One Whisper request, inside the whisper quota: the verbose transcript of ``audio``."""
    settings = get_settings()
    deployment = settings.whisper_engine
    options: dict[str, Any] = {"language": language} if language else {}

    def send(call: QuotaCall) -> Any:
        return call.client.audio.transcriptions.with_raw_response.create(
            file=(filename, audio),
            model=call.deployment,
            response_format="verbose_json",
            timestamp_granularities=sorted({"segment", *timestamp_granularities}),
            **options,
        )

    answer = call_within_quota(
        "whisper",
        deployment,
        0,
        app_id=app_id or settings.app_name,
        send=send,
        usage_of=lambda _answer: Usage(0),
    )
    return answer.model_dump(mode="json", exclude_none=True)


def needs_chunking(path: Path) -> bool:
    return duration_s(path) > get_settings().whisper_chunk_max_s


def park_chunks(path: Path) -> list[ChunkRef]:
    """Cut the recording at silences and park each chunk in Redis (for an hour longer than any
    task may run) so a chunk task on any machine can fetch it."""
    settings = get_settings()
    job = uuid.uuid4().hex
    client = redis_bytes_client()
    refs = []
    for number, chunk in enumerate(split_at_silences(path, settings.whisper_chunk_max_s)):
        key = f"{CHUNK_KEY_PREFIX}:{job}:{number}"
        client.set(key, chunk.wav, ex=settings.task_time_limit_s + 3600)
        refs.append(ChunkRef(key, chunk.offset_s))
    return refs


def transcribe_chunk(
    key: str,
    offset_s: float,
    language: str | None = None,
    timestamp_granularities: Sequence[Granularity] = (),
    *,
    app_id: str | None = None,
) -> dict[str, Any]:
    """One parked chunk transcribed: ``{key, offset_s, transcript}`` (times within the chunk)."""
    audio = cast(bytes | None, redis_bytes_client().get(key))
    if audio is None:
        raise PermanentError(f"audio chunk {key} is gone from Redis (expired or already merged)")
    transcript = transcribe_upload(
        f"{key.rsplit(':', 1)[-1]}.wav", audio, language, timestamp_granularities, app_id=app_id
    )
    return {"key": key, "offset_s": offset_s, "transcript": transcript}


def merge_chunk_results(
    results: Sequence[dict[str, Any]], response_format: ResponseFormat
) -> Transcript | str:
    """The recording's transcript from its chunks' results (in recording order, each
    :func:`transcribe_chunk`'s answer or ``{key, offset_s, error}``); the chunks are dropped."""
    redis_bytes_client().delete(*[result["key"] for result in results])
    failed = [result for result in results if "error" in result]
    if failed:
        raise PermanentError(
            f"{len(failed)} of {len(results)} audio chunks could not be "
            f"transcribed; the first at {failed[0]['offset_s']:.1f} s: "
            f"{failed[0]['error']}"
        )
    return render(
        merge_transcripts([(result["offset_s"], result["transcript"]) for result in results]),
        response_format,
    )


def prepare_transcription(
    path: str | Path,
    response_format: ResponseFormat = "json",
    timestamp_granularities: Sequence[Granularity] = (),
) -> list[ChunkRef] | None:
    """Validate a recording (nothing is uploaded if it is bad); the parked chunks when it is
    long enough to be transcribed in parts, else None (send it whole)."""
    _check_options(response_format, timestamp_granularities)
    path = validate_audio_file(path)
    return park_chunks(path) if needs_chunking(path) else None


def transcribe_whole(
    path: str | Path,
    language: str | None = None,
    response_format: ResponseFormat = "json",
    timestamp_granularities: Sequence[Granularity] = (),
    *,
    app_id: str | None = None,
) -> Transcript | str:
    """A validated recording sent as one upload, rendered in ``response_format``."""
    path = Path(path)
    transcript = transcribe_upload(
        path.name, path.read_bytes(), language, timestamp_granularities, app_id=app_id
    )
    return render(merge_transcripts([(0.0, transcript)]), response_format)


def get_rate_limit_stats() -> dict[str, Any]:
    """The Whisper pool now, across every worker: limit, used, locked, available, and the older
    service's ``utilization_percentage``."""
    status = quota_limiter().status("whisper", get_settings().whisper_engine)
    in_use = status.used_requests + status.locked_requests
    return {
        **status.as_dict(),
        "requests_per_minute": status.rpm,
        "current_requests": in_use,
        "utilization_percentage": 100.0 * in_use / status.rpm if status.rpm else 0.0,
    }


def set_rate_limit(requests_per_minute: int) -> None:
    """Change the Whisper requests-per-minute limit for every worker at once."""
    quota_limiter().set_limits("whisper", get_settings().whisper_engine, rpm=requests_per_minute)
