"""Long recordings cut at silences into chunks Whisper can take, so they transcribe in parallel.

Recordings are read with soundfile when libsndfile knows the format (WAV, MP3, FLAC, OGG) and
otherwise (MP4, M4A, WEBM: AAC, Opus ...) with the FFmpeg decoders bundled in the PyAV wheel, so
no ffmpeg needs to be installed; librosa mixes them down and resamples them to 16 kHz.

A cut falls in the middle of a pause, never inside a word: librosa finds the stretches of sound,
and each chunk ends at the last pause before it would grow longer than the limit (or at the
limit itself when someone talks without pausing). Chunks are 16 kHz mono 16-bit WAV: what
Whisper works at, 1.92 MB a minute, so a chunk's size follows from its duration.

librosa compiles its kernels with numba on first use (seconds; cached on disk afterwards), so it
is imported here only, and only recordings that need cutting pay for it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.audio_files import MAX_UPLOAD_BYTES
from tasks.errors import InvalidInput

if TYPE_CHECKING:
    import numpy as np
    from av.audio.stream import AudioStream
    from av.container import InputContainer

CHUNK_SAMPLE_RATE = 16000
CHUNK_BYTES_PER_SECOND = CHUNK_SAMPLE_RATE * 2  # mono, 16-bit
# Room for the WAV header and rounding, so a chunk at the duration limit is under the size limit.
MAX_CHUNK_BYTES = MAX_UPLOAD_BYTES - 64 * 1024
# Quieter than the loudest frame by this many dB counts as silence (speech over room noise).
SILENCE_TOP_DB = 35


@dataclass(frozen=True)
class AudioChunk:
    offset_s: float  # where the chunk starts in the whole recording
    wav: bytes


def duration_s(path: str | Path) -> float:
    """The recording's length: from its header, or by decoding it when the header does not say
    (a WEBM recorded in a browser, written as it streamed, has no duration)."""
    import av  # noqa: PLC0415 - heavy, long audio only
    import soundfile  # noqa: PLC0415 - heavy, long audio only

    try:
        return soundfile.info(str(path)).duration
    except soundfile.LibsndfileError:
        pass
    with _opened_with_av(path) as (container, _stream):
        if container.duration is not None:
            return container.duration / av.time_base
    samples, rate = read_audio(path)
    return samples.shape[-1] / rate


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """The recording's float32 samples (channels × frames) and their rate."""
    import numpy as np  # noqa: PLC0415 - heavy, long audio only
    import soundfile  # noqa: PLC0415 - heavy, long audio only

    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        return samples.T, rate
    except soundfile.LibsndfileError:
        pass
    import av  # noqa: PLC0415 - heavy, long audio only

    with _opened_with_av(path) as (container, stream):
        # Each decoder answers in its own sample format (AAC and Opus planar float, ALAC
        # integers ...): convert to one, keeping rate and channels for librosa to deal with.
        to_float = av.AudioResampler(format="fltp")
        blocks = [
            converted.to_ndarray()
            for frame in container.decode(stream)
            for converted in to_float.resample(frame)
        ]
        rate = stream.rate
    if not blocks:
        raise InvalidInput(f"audio file {Path(path).name!r} holds no audio")
    return np.concatenate(blocks, axis=1), rate


@contextmanager
def _opened_with_av(path: str | Path) -> Iterator[tuple[InputContainer, AudioStream]]:
    """The file's container and its first audio stream; FFmpeg refusing the file (its first
    bytes passed the sniff, the rest is not what they promised) is the caller's bad input."""
    import av  # noqa: PLC0415 - heavy, long audio only

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise InvalidInput(f"audio file {Path(path).name!r} holds no audio")
            yield container, container.streams.audio[0]
    except av.FFmpegError as error:
        raise InvalidInput(f"audio file {Path(path).name!r} cannot be decoded: {error}") from None


def max_chunk_seconds(requested_s: float) -> float:
    """The chunk duration to use: the one configured, unless a chunk that long would be too big."""
    return min(requested_s, MAX_CHUNK_BYTES / CHUNK_BYTES_PER_SECOND)


def plan_cuts(
    sounds: Sequence[tuple[float, float]], total_s: float, max_chunk_s: float
) -> list[tuple[float, float]]:
    """``(start, end)`` spans that cover ``[0, total_s]``, each at most ``max_chunk_s`` long,
    cut in the middle of the pauses between the ``sounds`` (sorted ``(start, end)`` seconds)."""
    pauses = [(end + next_start) / 2 for (_, end), (next_start, _) in pairwise(sounds)]
    spans: list[tuple[float, float]] = []
    start = 0.0
    while total_s - start > max_chunk_s:
        limit = start + max_chunk_s
        cut = max((pause for pause in pauses if start < pause <= limit), default=limit)
        spans.append((start, cut))
        start = cut
    spans.append((start, total_s))
    return spans


def split_at_silences(path: str | Path, max_chunk_s: float) -> list[AudioChunk]:
    """The recording at ``path`` as WAV chunks of at most ``max_chunk_s`` seconds."""
    import librosa  # noqa: PLC0415 - heavy, long audio only
    import soundfile  # noqa: PLC0415 - heavy, long audio only

    recording, recording_rate = read_audio(path)
    rate = CHUNK_SAMPLE_RATE
    samples = librosa.resample(librosa.to_mono(recording), orig_sr=recording_rate, target_sr=rate)
    sounds = [
        (start / rate, end / rate)
        for start, end in librosa.effects.split(samples, top_db=SILENCE_TOP_DB)
    ]
    chunks = []
    for start_s, end_s in plan_cuts(sounds, len(samples) / rate, max_chunk_seconds(max_chunk_s)):
        buffer = io.BytesIO()
        soundfile.write(
            buffer,
            samples[round(start_s * rate) : round(end_s * rate)],
            rate,
            format="WAV",
            subtype="PCM_16",
        )
        chunks.append(AudioChunk(offset_s=start_s, wav=buffer.getvalue()))
    return chunks
