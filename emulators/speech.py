"""Text to speech in-process with espeak-ng, for tests, benchmarks and the sample workload.

The ``espeakng-loader`` wheel bundles ``libespeak-ng`` and its voice data, so no system package
is needed; the library is driven through ctypes in its synchronous mode, where ``espeak_Synth``
calls our callback with each block of samples before it returns.

    >>> pcm = synthesize("what is the weather today")      # int16, 16 kHz mono
    >>> pcm.dtype.name, len(pcm) > 16000 // 2                # more than half a second
    ('int16', True)
    >>> wav_bytes(pcm, 16000)[:4]                             # a WAV file, to save or send
    b'RIFF'

The library itself is localspeech's (one per process: the voice agent speaks through it too).
"""

from __future__ import annotations

import io

import numpy as np
import soundfile
import soxr

from localspeech import EspeakError, espeak

DEFAULT_VOICE = "en-us+m3"
# What speech recognition (and Whisper) works at; espeak-ng itself renders 22,050 Hz.
DEFAULT_SAMPLE_RATE = 16000


class SpeechSynthesisError(RuntimeError):
    """espeak-ng refused a voice or a text."""


def synthesize(
    text: str, voice: str = DEFAULT_VOICE, sample_rate: int = DEFAULT_SAMPLE_RATE
) -> np.ndarray:
    """Speak ``text``: mono int16 PCM at ``sample_rate``."""
    engine = espeak()
    try:
        native = engine.render(text, voice)
    except EspeakError as error:
        raise SpeechSynthesisError(str(error)) from None
    if sample_rate == engine.native_rate or native.size == 0:
        return native
    return to_int16(
        soxr.resample(native.astype(np.float32) / 32768, engine.native_rate, sample_rate)
    )


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as int16 PCM, clipped rather than wrapped."""
    return (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)


def wav_bytes(pcm: np.ndarray, sample_rate: int = DEFAULT_SAMPLE_RATE) -> bytes:
    """A complete 16-bit WAV file holding ``pcm``."""
    buffer = io.BytesIO()
    soundfile.write(buffer, pcm, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
