"""The process's libespeak-ng, driven through ctypes in its synchronous mode.

The ``espeakng-loader`` wheel bundles ``libespeak-ng`` and its voice data, so no system package
is needed. In synchronous mode ``espeak_Synth`` calls our callback with each block of samples
before it returns; one lock serialises every render, since the voice and the callback are global.

    >>> pcm = espeak().render("hello", "en-us")         # int16 at espeak().native_rate
    >>> pcm.dtype.name, espeak().native_rate, len(pcm) > 0
    ('int16', 22050, True)
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import espeakng_loader
import numpy as np

# From espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakError(RuntimeError):
    """espeak-ng could not start, or refused a voice or a text."""


class Espeak:
    """libespeak-ng, initialised once per process: get it with :func:`espeak`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._library = ctypes.CDLL(espeakng_loader.get_library_path())
        self._library.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        self._library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        data_path = espeakng_loader.get_data_path().encode()
        self.native_rate = int(
            self._library.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        )
        if self.native_rate <= 0:
            raise EspeakError("libespeak-ng could not load its voice data (espeakng-loader)")
        self._blocks: list[np.ndarray] = []
        # Kept on self: ctypes must not free a callback the library still calls.
        self._callback = _SynthCallback(self._collect)
        self._library.espeak_SetSynthCallback(self._callback)

    def _collect(self, samples: Any, count: int, _events: Any) -> int:
        if count > 0:
            self._blocks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0  # 0: carry on synthesising

    def render(self, text: str, voice: str) -> np.ndarray:
        """``text`` spoken by ``voice``: int16 samples at :attr:`native_rate`."""
        encoded = text.encode()
        with self._lock:
            if self._library.espeak_SetVoiceByName(voice.encode()) != 0:
                raise EspeakError(f"espeak-ng has no voice {voice!r}")
            self._blocks = []
            status = self._library.espeak_Synth(
                encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            self._library.espeak_Synchronize()
            blocks, self._blocks = self._blocks, []
        if status != 0:
            raise EspeakError(f"espeak-ng could not speak a {len(text)}-character text ({status})")
        return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int16)


_guard = threading.Lock()
_instance: list[Espeak] = []


def espeak() -> Espeak:
    """The process's one :class:`Espeak` (created on first use; never two initialisations)."""
    with _guard:
        if not _instance:
            _instance.append(Espeak())
        return _instance[0]
