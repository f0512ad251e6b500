"""Speech that is the same every run, for tests that check what a recogniser hears.

espeak-ng carries state from one utterance to the next within a process (its pitch flutter and
noise run on), so the same text is spoken a little differently depending on what the process
spoke before: in a pytest worker, on which tests ran there first. A recogniser then sometimes
hears a phrase differently, and a test fails on one ordering and passes on another. Spoken by a
fresh interpreter, the same text gives the same samples every time.

    pcm = known_phrases(seconds=8, pause_secs=0.7)  # int16 at 16 kHz
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from emulators.recognizer import DEFAULT_PHRASES_FILE, read_phrases
from emulators.speech import DEFAULT_SAMPLE_RATE, synthesize

SPEAK_TIMEOUT_SECS = 120


def known_phrases(seconds: float, pause_secs: float) -> np.ndarray:
    """The emulator's known phrases, spoken one after another with ``pause_secs`` between, for
    about ``seconds`` (int16 at 16 kHz), by a fresh interpreter."""
    spoken = subprocess.run(
        [sys.executable, "-m", "tests.support.speech", json.dumps([seconds, pause_secs])],
        capture_output=True,
        check=True,
        timeout=SPEAK_TIMEOUT_SECS,
    )
    return np.frombuffer(spoken.stdout, dtype=np.int16)


def _speak(seconds: float, pause_secs: float) -> np.ndarray:
    phrases = read_phrases(DEFAULT_PHRASES_FILE)
    pause = np.zeros(int(pause_secs * DEFAULT_SAMPLE_RATE), dtype=np.int16)
    parts: list[np.ndarray] = []
    samples = 0
    while samples < seconds * DEFAULT_SAMPLE_RATE:
        speech = synthesize(phrases[len(parts) // 2 % len(phrases)])
        parts += [speech, pause]
        samples += len(speech) + len(pause)
    return np.concatenate(parts)


if __name__ == "__main__":
    seconds, pause_secs = json.loads(sys.argv[1])
    sys.stdout.buffer.write(_speak(seconds, pause_secs).astype(np.int16).tobytes())
