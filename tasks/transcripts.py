"""Whisper transcripts of audio chunks, merged into one and rendered in the format asked for.

Each chunk is transcribed as ``verbose_json`` (text, segments, words, times relative to the
chunk); merging shifts every time by the chunk's offset in the whole recording, renumbers the
segments, and only then renders ``text``, ``json``, ``srt`` or ``vtt``, so subtitles of a long
recording count from its start, not from the start of each chunk. No I/O here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
RESPONSE_FORMATS: tuple[ResponseFormat, ...] = ("json", "text", "srt", "verbose_json", "vtt")
Transcript = dict[str, Any]  # Whisper's verbose_json shape


def _shifted(items: Sequence[dict[str, Any]], offset_s: float) -> list[dict[str, Any]]:
    return [
        {
            **item,
            "start": round(item["start"] + offset_s, 3),
            "end": round(item["end"] + offset_s, 3),
        }
        for item in items
    ]


def merge_transcripts(parts: Sequence[tuple[float, Transcript]]) -> Transcript:
    """One verbose transcript from ``(offset_s, chunk transcript)`` pairs in recording order."""
    segments: list[dict[str, Any]] = []
    words: list[dict[str, Any]] = []
    for offset_s, part in parts:
        segments += _shifted(part.get("segments") or [], offset_s)
        words += _shifted(part.get("words") or [], offset_s)
    merged: Transcript = {
        "task": "transcribe",
        "language": next((part.get("language") for _, part in parts if part.get("language")), None),
        "duration": round(
            max((offset + (part.get("duration") or 0.0) for offset, part in parts), default=0.0), 3
        ),
        "text": " ".join(text for _, part in parts if (text := (part.get("text") or "").strip())),
        "segments": [{**segment, "id": number} for number, segment in enumerate(segments)],
    }
    if words:
        merged["words"] = words
    return merged


def _timestamp(seconds: float, decimal_mark: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    whole, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{decimal_mark}{millis:03d}"


def to_srt(transcript: Transcript) -> str:
    cues = [
        f"{number}\n{_timestamp(segment['start'], ',')} --> {_timestamp(segment['end'], ',')}\n"
        f"{segment['text'].strip()}\n"
        for number, segment in enumerate(transcript["segments"], start=1)
    ]
    return "\n".join(cues)


def to_vtt(transcript: Transcript) -> str:
    cues = [
        f"{_timestamp(segment['start'], '.')} --> {_timestamp(segment['end'], '.')}\n"
        f"{segment['text'].strip()}\n"
        for segment in transcript["segments"]
    ]
    return "\n".join(["WEBVTT\n", *cues])


def render(transcript: Transcript, response_format: ResponseFormat) -> Transcript | str:
    """The transcript as Whisper would have answered with ``response_format``."""
    if response_format == "verbose_json":
        return transcript
    if response_format == "json":
        return {"text": transcript["text"]}
    if response_format == "text":
        return transcript["text"]
    if response_format == "srt":
        return to_srt(transcript)
    return to_vtt(transcript)
