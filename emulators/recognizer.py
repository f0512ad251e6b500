"""Speech recognition for the Whisper routes: pocketsphinx, a phrase grammar first, then open.

pocketsphinx's open-vocabulary English model is real recognition but hears espeak-ng's synthetic
voice badly ("what is the weather today" comes back as "what is the day"). Tests and the sample
workload speak known sentences, so each upload is decoded first against a JSGF grammar that
accepts any sequence of known phrases (``phrases.txt`` or ``EMULATOR_STT_PHRASES_FILE``): when
the audio is such a sequence, the words come back exactly. A grammar will force any audio onto
some phrase, so its result is rejected when it explains the speech badly: when the decoder
finds no path through the grammar, or aligns more than :data:`MAX_SPEECH_IN_SILENCE` of the
loud frames to silence (a long sentence squeezed into "goodbye"). Rejected audio is decoded
with the open model instead. Nothing is invented: either way the words are what a decoder heard.

Segments are real: a segment ends where the grammar moves from one phrase to the next, or at a
pause of at least :data:`SEGMENT_PAUSE_SECS`; start and end times come from the decoder's
alignment. Text is given in sentence case with a full stop per segment, as Whisper writes it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pocketsphinx import Decoder

SAMPLE_RATE = 16000
# pocketsphinx's default frame rate: alignment frames are 10 ms.
FRAMES_PER_SECOND = 100
# A pause this long ends a segment: about the gap between spoken sentences.
SEGMENT_PAUSE_SECS = 0.3
# Grammar decoding needs silence around the speech to enter and leave the grammar cleanly;
# synthetic speech starts on the first sample.
PADDING_SECS = 0.3
# Above this share of loud frames aligned to silence, the grammar result is a forced fit.
# Phrases that match leave 0-20 % there (pauses, soft consonants); forced fits 75 % and more.
MAX_SPEECH_IN_SILENCE = 0.4
# A frame is loud when its RMS exceeds this share of the loudest frames' (95th percentile).
LOUD_FRACTION = 0.1
# pocketsphinx's default beams prune the right phrase of a 20-phrase grammar early ("thank you
# very much" became "goodbye"); wider beams keep it, and the silence check catches forced fits.
WIDE_BEAMS = {"beam": 1e-80, "wbeam": 1e-60, "pbeam": 1e-80}
DEFAULT_PHRASES_FILE = Path(__file__).with_name("phrases.txt")
# Transcripts remembered by audio hash: a few minutes of recordings, a few hundred KB of text.
RECENT_TRANSCRIPTS = 256
PHRASE_SEARCH = "phrases"
# Entries of the alignment that are not words: sentence marks, fillers, grammar joints.
_FILLERS = {"<s>", "</s>", "<sil>", "(NULL)"}
_PHRASE_JOINT = "(NULL)"

log = logging.getLogger("conduit.emulators.recognizer")


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Segment:
    words: tuple[Word, ...]

    @property
    def start(self) -> float:
        return self.words[0].start

    @property
    def end(self) -> float:
        return self.words[-1].end

    @property
    def text(self) -> str:
        sentence = " ".join(word.word for word in self.words)
        return sentence[:1].upper() + sentence[1:] + "."


@dataclass(frozen=True)
class Transcript:
    segments: tuple[Segment, ...]
    duration: float

    @property
    def text(self) -> str:
        return " ".join(segment.text for segment in self.segments)

    @property
    def words(self) -> list[Word]:
        return [word for segment in self.segments for word in segment.words]


def read_phrases(path: str | Path) -> list[str]:
    """Phrases from a file, one a line, lower-cased, punctuation and comments removed."""
    phrases = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        words = re.findall(r"[a-z']+", line.split("#", 1)[0].lower())
        if words:
            phrases.append(" ".join(words))
    return phrases


class Recognizer:
    """One pocketsphinx decoder (0.4 s to load) shared by every request thread, one at a time.

    Decoding is deterministic and costs about real time with the wide beams, so transcripts are
    kept by the audio's hash: the same recording sent again (a retried task, a second format)
    answers at once, as a second Whisper call would, only faster.
    """

    def __init__(self, phrases: list[str]) -> None:
        # bestpath off: its lattice rescoring drops the last word of grammar results.
        self._decoder = Decoder(
            samprate=SAMPLE_RATE, bestpath=False, loglevel="FATAL", **WIDE_BEAMS
        )
        self._open_search = self._decoder.current_search()
        self._lock = threading.Lock()
        self._recent: OrderedDict[bytes, Transcript] = OrderedDict()
        self.phrases = self._known_phrases(phrases)
        if self.phrases:
            rules = " | ".join(self.phrases)
            self._decoder.add_jsgf_string(
                PHRASE_SEARCH,
                "#JSGF V1.0;\ngrammar phrases;\n"
                f"public <utterance> = <phrase>+;\n<phrase> = {rules};\n",
            )

    def _known_phrases(self, phrases: list[str]) -> list[str]:
        known = []
        for phrase in phrases:
            missing = [w for w in phrase.split() if self._decoder.lookup_word(w) is None]
            if missing:
                log.warning(
                    "phrase %r skipped: %s not in the pronouncing dictionary",
                    phrase,
                    ", ".join(missing),
                )
            else:
                known.append(phrase)
        return known

    def transcribe(self, pcm: np.ndarray) -> Transcript:
        """Recognise int16 mono 16 kHz speech."""
        pcm = pcm.astype(np.int16)
        key = hashlib.sha256(pcm.tobytes()).digest()
        with self._lock:
            if key in self._recent:
                self._recent.move_to_end(key)
                return self._recent[key]
            transcript = self._recognise(pcm)
            self._recent[key] = transcript
            if len(self._recent) > RECENT_TRANSCRIPTS:
                self._recent.popitem(last=False)
        return transcript

    def _recognise(self, pcm: np.ndarray) -> Transcript:
        padding = np.zeros(int(PADDING_SECS * SAMPLE_RATE), dtype=np.int16)
        audio = np.concatenate([padding, pcm, padding])
        alignment = self._decode(PHRASE_SEARCH, audio) if self.phrases else None
        if alignment is not None and _speech_in_silence(alignment, audio) > MAX_SPEECH_IN_SILENCE:
            alignment = None
        if alignment is None:
            alignment = self._decode(self._open_search, audio) or []
        duration = len(pcm) / SAMPLE_RATE
        return Transcript(tuple(_segments(alignment, duration)), duration)

    def _decode(self, search: str, audio: np.ndarray) -> list[tuple[str, int, int]] | None:
        """(word, first frame, last frame) of the padded audio; None when nothing matched."""
        self._decoder.activate_search(search)
        self._decoder.start_utt()
        self._decoder.process_raw(audio.tobytes(), full_utt=True)
        self._decoder.end_utt()
        if self._decoder.hyp() is None:
            return None
        return [(entry.word, entry.start_frame, entry.end_frame) for entry in self._decoder.seg()]


def _speech_in_silence(alignment: list[tuple[str, int, int]], audio: np.ndarray) -> float:
    """The share of loud frames the alignment calls silence."""
    samples_per_frame = SAMPLE_RATE // FRAMES_PER_SECOND
    usable = len(audio) // samples_per_frame * samples_per_frame
    frames = audio[:usable].astype(np.float32).reshape(-1, samples_per_frame)
    loudness = np.sqrt((frames**2).mean(axis=1))
    loud = loudness > LOUD_FRACTION * np.percentile(loudness, 95)
    silent = np.zeros_like(loud)
    for word, first, last in alignment:
        if word in _FILLERS:
            silent[max(first, 0) : last + 1] = True
    return float((loud & silent).sum() / max(1, loud.sum()))


def _segments(alignment: list[tuple[str, int, int]], duration: float) -> list[Segment]:
    segments: list[Segment] = []
    current: list[Word] = []
    for word, first, last in alignment:
        # Frames count from the start of the padded audio; times from the start of the upload.
        start = first / FRAMES_PER_SECOND - PADDING_SECS
        end = (last + 1) / FRAMES_PER_SECOND - PADDING_SECS
        is_break = word == _PHRASE_JOINT or (word == "<sil>" and end - start >= SEGMENT_PAUSE_SECS)
        if is_break and current:
            segments.append(Segment(tuple(current)))
            current = []
        if word in _FILLERS or word.startswith(("[", "+")):
            continue
        # "and(2)" is the dictionary's second pronunciation of "and".
        spelling = word.split("(", 1)[0]
        current.append(Word(spelling, round(max(start, 0.0), 2), round(min(end, duration), 2)))
    if current:
        segments.append(Segment(tuple(current)))
    return segments
