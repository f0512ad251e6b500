"""Offline speech shared by the voice agent's local engines and the emulators: espeak-ng.

It sits at the bottom of the layering beside settings/ and imports nothing of ours. Why one
module: libespeak-ng is one library per process with global state (one voice, one sample
callback), so two wrappers in one process replace each other's callback and one of them then
renders silence. Everything that speaks goes through :func:`espeak`.
"""

from localspeech.espeak import Espeak, EspeakError, espeak

__all__ = ["Espeak", "EspeakError", "espeak"]
