"""Text to speech in-process with espeak-ng, for tests, benchmarks and the sample workload.

The ``espeakng-loader`` wheel bundles ``libespeak-ng`` and its voice data, so no system package
is needed; the library is driven through ctypes in its synchronous mode, where ``espeak_Synth``
calls our callback with each block of samples before it returns.

    >>> pcm = synthesize("what is the weather today")      # int16, 16 kHz mono
    >>> pcm.dtype.name, len(pcm) > 16000 // 2                # more than half a second
    ('int16', True)
    >>> wav_bytes(pcm, 16000)[:4]                             # a WAV file, to save or send
    b'RIFF'

libespeak-ng keeps global state (one voice, one callback), so one lock serialises every call.
"""

from __future__ import annotations

import ctypes
import io
import threading
from functools import lru_cache

import espeakng_loader
import numpy as np
import soundfile
import soxr

DEFAULT_VOICE = "en-us+m3"
# What speech recognition (and Whisper) works at; espeak-ng itself renders 22,050 Hz.
DEFAULT_SAMPLE_RATE = 16000

# From espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class SpeechSynthesisError(RuntimeError):
    """espeak-ng refused a voice or a text."""


class _Espeak:
    """The process's one libespeak-ng, initialised on first use."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.library = ctypes.CDLL(espeakng_loader.get_library_path())
        self.library.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.native_rate = self.library.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0
        )
        if self.native_rate <= 0:
            raise SpeechSynthesisError("libespeak-ng failed to initialise its voice data")
        self._blocks: list[np.ndarray] = []
        # Kept on self: ctypes must not garbage-collect a callback the library still holds.
        self._callback = _SynthCallback(self._collect)
        self.library.espeak_SetSynthCallback(self._callback)

    def _collect(self, samples, count: int, _events) -> int:
        if count > 0:
            self._blocks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0  # 0: carry on synthesising

    def render(self, text: str, voice: str) -> np.ndarray:
        """int16 samples at ``native_rate``."""
        with self.lock:
            if self.library.espeak_SetVoiceByName(voice.encode()) != 0:
                raise SpeechSynthesisError(f"espeak-ng has no voice {voice!r}")
            self._blocks = []
            encoded = text.encode()
            status = self.library.espeak_Synth(
                encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None
            )
            self.library.espeak_Synchronize()
            if status != 0:
                raise SpeechSynthesisError(f"espeak-ng could not speak {text[:40]!r} ({status})")
            blocks, self._blocks = self._blocks, []
        return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int16)


_engine_guard = threading.Lock()


@lru_cache(maxsize=1)
def _load_engine() -> _Espeak:
    return _Espeak()


def _engine() -> _Espeak:
    # lru_cache alone could run two initialisations at once; libespeak-ng must see one.
    with _engine_guard:
        return _load_engine()


def synthesize(
    text: str, voice: str = DEFAULT_VOICE, sample_rate: int = DEFAULT_SAMPLE_RATE
) -> np.ndarray:
    """Speak ``text``: mono int16 PCM at ``sample_rate``."""
    engine = _engine()
    native = engine.render(text, voice)
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
