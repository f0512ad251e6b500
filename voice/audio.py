"""PCM16 arithmetic for the media path, without I/O: resampling, framing, loudness.

ACS streams 16 or 24 kHz; recognition and VAD work at 16 kHz; espeak-ng renders 22,050 Hz. soxr
resamples (its streaming form keeps filter state across 20 ms frames, so frame edges add no clicks).
"""

from __future__ import annotations

import numpy as np
import soxr


def to_float(pcm: bytes) -> np.ndarray:
    """PCM16 bytes as float32 samples in [-1, 1]."""
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples as PCM16 bytes, clipped rather than wrapped."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def resample(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """A whole clip of PCM16 from one rate to another."""
    if from_rate == to_rate or not pcm:
        return pcm
    return to_pcm16(soxr.resample(to_float(pcm), from_rate, to_rate))


class StreamResampler:
    """Resamples a stream arriving in frames (ACS's 24 kHz to the engines' 16 kHz)."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate, self.to_rate = from_rate, to_rate
        self._stream = (
            soxr.ResampleStream(from_rate, to_rate, 1, dtype="float32")
            if from_rate != to_rate
            else None
        )

    def __call__(self, pcm: bytes) -> bytes:
        if self._stream is None:
            return pcm
        return to_pcm16(self._stream.resample_chunk(to_float(pcm)))


def split_frames(pcm: bytes, size: int) -> list[bytes]:
    """``pcm`` cut into ``size``-byte frames; the last is padded with silence to full size."""
    frames = [pcm[i : i + size] for i in range(0, len(pcm), size)]
    if frames and len(frames[-1]) < size:
        frames[-1] = frames[-1] + bytes(size - len(frames[-1]))
    return frames


def rms(pcm: bytes) -> float:
    """Root mean square of PCM16, in [0, 1]."""
    samples = to_float(pcm)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
