"""The three engine interfaces a call needs, and where a call gets its engines from.

- :class:`Recognizer`: streaming speech to text, one utterance at a time, 16 kHz PCM16 in;
- :class:`Synthesizer`: text to PCM16 at the call's rate, in chunks as they are ready;
- :class:`VoiceActivityDetector`: speech / no speech per short window of 16 kHz PCM16.

:func:`engines_from_settings` builds one call's set (``VOICE_ENGINE`` = local | azure; the VAD is
always local: Silero or webrtcvad). A handler never builds engines itself: it is handed an
:class:`EngineProvider` (``acquire()`` / ``release()``), so pooling can replace
:class:`FreshEngines` without touching the handlers.

For example::

    provider = FreshEngines(settings)
    with provider.engines() as engines:
        engines.recognizer.start_utterance()
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from settings import Settings

# Everything recognition and VAD work at; ACS's 24 kHz is resampled down.
ENGINE_SAMPLE_RATE = 16000


class EngineError(RuntimeError):
    """An engine cannot be built or used; the message names the setting at fault."""


@runtime_checkable
class Recognizer(Protocol):
    def start_utterance(self) -> None:
        """Begin a new utterance (forget the previous one)."""

    def push(self, pcm: bytes) -> str | None:
        """Feed 16 kHz PCM16 of the utterance; the partial text when it changed, else None."""

    def finish_utterance(self) -> str:
        """End the utterance: its final text ('' when nothing was recognised)."""

    def close(self) -> None: ...


@runtime_checkable
class Synthesizer(Protocol):
    def synthesize(self, text: str, sample_rate: int) -> Iterator[bytes]:
        """PCM16 mono at ``sample_rate`` for ``text``, in chunks as soon as each is ready."""

    def close(self) -> None: ...


@runtime_checkable
class VoiceActivityDetector(Protocol):
    window_secs: float

    def windows(self, pcm: bytes) -> list[bool]:
        """Feed 16 kHz PCM16 (any length): a speech decision per window completed by it."""

    def reset(self) -> None: ...


@dataclass
class Engines:
    recognizer: Recognizer
    synthesizer: Synthesizer
    vad: VoiceActivityDetector

    def reset(self) -> None:
        """Ready for another call: no state of the previous one survives."""
        self.vad.reset()
        self.recognizer.start_utterance()
        self.recognizer.finish_utterance()

    def close(self) -> None:
        self.recognizer.close()
        self.synthesizer.close()


def vad_from_settings(settings: Settings) -> VoiceActivityDetector:
    from voice.engines.local import SileroVad, WebRtcVad

    if settings.vad_engine == "webrtc":
        return WebRtcVad()
    return SileroVad(settings.vad_confidence)


def engines_from_settings(settings: Settings) -> Engines:
    """A new set of engines for one call, as ``VOICE_ENGINE`` says."""
    if settings.voice_engine == "azure":
        from voice.engines.azure import AzureRecognizer, AzureSynthesizer, speech_config

        config = speech_config(settings)
        return Engines(
            AzureRecognizer(config, settings.speech_language),
            AzureSynthesizer(config, settings.speech_voice),
            vad_from_settings(settings),
        )
    from voice.engines.local import LocalRecognizer, LocalSynthesizer, read_phrases

    phrases = (
        read_phrases(settings.local_stt_phrases_file) if settings.local_stt_phrases_file else []
    )
    return Engines(
        LocalRecognizer(phrases),
        LocalSynthesizer(settings.local_tts_voice),
        vad_from_settings(settings),
    )


class EngineProvider(Protocol):
    """Where handlers get a call's engines: acquired at the start, released at the end."""

    def acquire(self) -> Engines: ...

    def release(self, engines: Engines) -> None: ...


class FreshEngines:
    """Builds engines per call and keeps up to ``max_idle`` released sets for the next calls
    (a pocketsphinx decoder takes ~1 s of CPU to load; reusing one takes a reset)."""

    def __init__(self, settings: Settings, max_idle: int = 4) -> None:
        self._settings = settings
        self._max_idle = max_idle
        self._idle: list[Engines] = []
        self._lock = threading.Lock()

    def acquire(self) -> Engines:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return engines_from_settings(self._settings)

    def release(self, engines: Engines) -> None:
        try:
            engines.reset()
        except Exception:  # noqa: BLE001 - a broken engine is closed, never reused
            engines.close()
            return
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(engines)
                return
        engines.close()

    def warm_up(self) -> None:
        """Build one set ahead of the first call, so it does not wait ~1 s for a decoder."""
        engines = engines_from_settings(self._settings)
        for _ in engines.synthesizer.synthesize("ready", ENGINE_SAMPLE_RATE):
            pass
        self.release(engines)

    @contextmanager
    def engines(self) -> Iterator[Engines]:
        engines = self.acquire()
        try:
            yield engines
        finally:
            self.release(engines)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for engines in idle:
            engines.close()
