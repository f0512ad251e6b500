"""``transcribe``: an audio message → its transcript, in the format the message asks for.

In: ``{id, taskId?, audio_path | audio_url | audio_base64 (+ filename), language?,
response_format?, timestamp_granularities?}``, exactly one audio source. Out: ``{id, taskId,
message: "SUCCESS", response_format, transcript}``, or the shared failure payload.

A recording that fits one upload is transcribed here; a long one is cut into chunks that a
Celery group transcribes at once, and :func:`finish_transcription` merges them and answers
(the processor task is replaced by that chord, so no slot waits for the chunks).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

from celery import chord, shared_task
from pydantic import BaseModel, model_validator

from tasks.ai_tasks import chunk_group
from tasks.audio_sources import local_audio
from tasks.errors import PermanentError
from tasks.processors.base import failure_payload, processor_task
from tasks.task_base import ConduitTask
from tasks.transcription import merge_chunk_results, prepare_transcription, transcribe_whole
from tasks.transcripts import ResponseFormat


class TranscribeInput(BaseModel):
    id: str | int
    taskId: str | None = None  # the older message's field name
    audio_path: str | None = None
    audio_url: str | None = None
    audio_base64: str | None = None
    filename: str | None = None
    language: str | None = None
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = "json"
    timestamp_granularities: list[Literal["word", "segment"]] = []
    app_id: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> TranscribeInput:
        given = [
            name for name in ("audio_path", "audio_url", "audio_base64") if getattr(self, name)
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of audio_path, audio_url, audio_base64 "
                f"(got {', '.join(given) or 'none'})"
            )
        return self


def _answer(message: dict[str, Any], response_format: str, transcript: Any) -> dict[str, Any]:
    return {
        "id": message["id"],
        "taskId": message.get("taskId"),
        "message": "SUCCESS",
        "response_format": response_format,
        "transcript": transcript,
    }


@shared_task(name="processors.transcribe.finish", base=ConduitTask)
def finish_transcription(
    chunk_results: list[dict[str, Any]], message: dict[str, Any], response_format: ResponseFormat
) -> dict[str, Any]:
    """The chord callback: merged transcript, or the failure payload; never raises."""
    try:
        return _answer(
            message, response_format, merge_chunk_results(chunk_results, response_format)
        )
    except PermanentError as error:
        return failure_payload(message, error)


@processor_task("transcribe", TranscribeInput)
def transcribe(message: TranscribeInput) -> Any:
    with tempfile.TemporaryDirectory(prefix="conduit-audio-") as work_dir:
        path = local_audio(
            Path(work_dir),
            path=message.audio_path,
            url=message.audio_url,
            base64_data=message.audio_base64,
            filename=message.filename,
        )
        chunks = prepare_transcription(
            path, message.response_format, message.timestamp_granularities
        )
        if chunks is None:
            transcript = transcribe_whole(
                path,
                message.language,
                message.response_format,
                message.timestamp_granularities,
                app_id=message.app_id,
            )
            return _answer(message.model_dump(), message.response_format, transcript)
    fields = {"id": message.id, "taskId": message.taskId}
    return chord(
        chunk_group(
            chunks, message.language, message.timestamp_granularities, app_id=message.app_id
        ),
        finish_transcription.s(fields, message.response_format),
    )
