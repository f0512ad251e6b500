"""Whisper transcriptions and translations: decode the upload, recognise it, format the answer.

Any format libsndfile reads (wav, flac, ogg, mp3 ...) is decoded with soundfile; the others (m4a,
mp4, webm: AAC, Opus ...) with the FFmpeg decoders bundled in the PyAV wheel, so no ffmpeg needs
to be installed. Audio is mixed down to mono and resampled to 16 kHz, as Whisper does, then
recognised (:mod:`emulators.recognizer`).

Translations return the English transcript: the acoustic model is English, and Whisper
translates into English, so for English speech the two answers agree.

Response formats: ``json``, ``text``, ``srt``, ``vtt`` and ``verbose_json`` (segments, and words
when ``timestamp_granularities[]`` includes ``word``), in OpenAI's shapes.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import soundfile
import soxr

from emulators.errors import BadRequest, PayloadTooLarge
from emulators.recognizer import SAMPLE_RATE, Transcript

# Whisper's documented upload limit.
MAX_FILE_BYTES = 25 * 1024 * 1024
RESPONSE_FORMATS = {"json", "text", "srt", "vtt", "verbose_json"}
SUPPORTED_FORMATS = ["flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm"]


@dataclass(frozen=True)
class AudioRequest:
    task: str  # "transcribe" or "translate"
    filename: str
    data: bytes
    response_format: str
    word_timestamps: bool
    segment_timestamps: bool

    @classmethod
    def from_form(cls, task: str, form: Any, files: Any) -> AudioRequest:
        upload = files.get("file")
        if upload is None:
            raise BadRequest("'file' is a required multipart field", "file")
        data = upload.read()
        if len(data) > MAX_FILE_BYTES:
            raise PayloadTooLarge(
                f"Maximum content size limit ({MAX_FILE_BYTES}) exceeded ({len(data)} bytes read)"
            )
        response_format = form.get("response_format") or "json"
        if response_format not in RESPONSE_FORMATS:
            raise BadRequest(
                f"'response_format' must be one of {sorted(RESPONSE_FORMATS)}", "response_format"
            )
        granularities = set(
            form.getlist("timestamp_granularities[]") or form.getlist("timestamp_granularities")
        )
        return cls(
            task=task,
            filename=upload.filename or "audio",
            data=data,
            response_format=response_format,
            word_timestamps="word" in granularities,
            # Segments are the default; asking for words alone leaves them out.
            segment_timestamps="segment" in granularities or not granularities,
        )


def decode_audio(data: bytes, filename: str) -> np.ndarray:
    """int16 mono PCM at 16 kHz from an uploaded file's bytes."""
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, TypeError):
        samples, rate = _decode_with_av(data, filename)
    mono = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return (np.clip(mono, -1.0, 1.0) * 32767).astype(np.int16)


def _decode_with_av(data: bytes, filename: str) -> tuple[np.ndarray, int]:
    """float32 samples (frames × channels, as soundfile gives them) and their rate."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.audio[0]
            # Each decoder answers in its own sample format (AAC and Opus planar float, ALAC
            # integers ...): convert to one. Rate and channels are kept; soxr and the mix-down
            # above deal with those for every format alike.
            to_float = av.AudioResampler(format="fltp")
            blocks = [
                converted.to_ndarray()
                for frame in container.decode(stream)
                for converted in to_float.resample(frame)
            ]
            return np.concatenate(blocks, axis=1).T, stream.rate
    except Exception as error:  # noqa: BLE001 - any decoder failure means the same to a client
        raise BadRequest(
            f"Invalid file format. Supported formats: {SUPPORTED_FORMATS} "
            f"(emulator: could not decode {filename!r}: {type(error).__name__})",
            "file",
        ) from None


def _timestamp(seconds: float, separator: str) -> str:
    milliseconds = round(seconds * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, fraction = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{fraction:03d}"


def _srt(transcript: Transcript) -> str:
    return "".join(
        f"{number}\n{_timestamp(segment.start, ',')} --> {_timestamp(segment.end, ',')}\n"
        f"{segment.text}\n\n"
        for number, segment in enumerate(transcript.segments, start=1)
    )


def _vtt(transcript: Transcript) -> str:
    return "WEBVTT\n\n" + "".join(
        f"{_timestamp(segment.start, '.')} --> {_timestamp(segment.end, '.')}\n{segment.text}\n\n"
        for segment in transcript.segments
    )


def _verbose(request: AudioRequest, transcript: Transcript) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": request.task,
        "language": "english",
        "duration": round(transcript.duration, 2),
        "text": transcript.text,
    }
    if request.segment_timestamps:
        body["segments"] = [
            {
                "id": index,
                "seek": 0,
                "start": segment.start,
                "end": segment.end,
                "text": " " + segment.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 1.0,
                "no_speech_prob": 0.0,
            }
            for index, segment in enumerate(transcript.segments)
        ]
    if request.word_timestamps:
        body["words"] = [
            {"word": word.word, "start": word.start, "end": word.end} for word in transcript.words
        ]
    body["usage"] = {"type": "duration", "seconds": math.ceil(transcript.duration)}
    return body


def format_transcript(request: AudioRequest, transcript: Transcript) -> tuple[str, str]:
    """(body, content type) in the requested response format."""
    if request.response_format == "text":
        return transcript.text + "\n", "text/plain; charset=utf-8"
    if request.response_format == "srt":
        return _srt(transcript), "text/plain; charset=utf-8"
    if request.response_format == "vtt":
        return _vtt(transcript), "text/vtt; charset=utf-8"
    if request.response_format == "verbose_json":
        return json.dumps(_verbose(request, transcript)), "application/json"
    usage = {"type": "duration", "seconds": math.ceil(transcript.duration)}
    return json.dumps({"text": transcript.text, "usage": usage}), "application/json"
