"""The typed frames that flow through a call: what ACS sends, and what the stages pass on.

Frames are small dataclasses (pipecat's shape). Two kinds:

- **system frames** (:class:`SystemFrame`) are never dropped and overtake queued work:
  :class:`Interruption` (barge-in) and :class:`EndOfCall`;
- **data frames** are everything else, and an interruption drops those still queued.

Inbound frames come from :mod:`voice.protocol` (``AudioMetadata``, ``AudioData`` ...); the stages
make the rest (transcripts, end of turn, LLM text, TTS audio).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# ACS streams 20 ms frames; so do we.
FRAME_MS = 20


def frame_bytes(sample_rate: int) -> int:
    """Bytes of one 20 ms frame of 16-bit mono PCM at ``sample_rate`` (640 at 16 kHz)."""
    return sample_rate * FRAME_MS // 1000 * 2


@dataclass(frozen=True)
class Frame:
    """Base of every frame."""


@dataclass(frozen=True)
class SystemFrame(Frame):
    """Never dropped; handled ahead of queued data frames."""


# --- inbound, from ACS ----------------------------------------------------------------------------
@dataclass(frozen=True)
class AudioMetadata(Frame):
    sample_rate: int
    channels: int = 1
    encoding: str = "PCM"
    subscription_id: str = ""
    length: int = 0


@dataclass(frozen=True)
class AudioIn(Frame):
    """20 ms of the caller's PCM16 mono audio."""

    pcm: bytes
    silent: bool = False
    timestamp: str = ""
    participant: str = ""


@dataclass(frozen=True)
class Dtmf(Frame):
    digit: str


@dataclass(frozen=True)
class TranscriptionMetadata(Frame):
    locale: str = ""
    call_connection_id: str = ""
    subscription_id: str = ""
    correlation_id: str = ""


@dataclass(frozen=True)
class Word:
    text: str
    offset_ticks: int = 0
    duration_ticks: int = 0


@dataclass(frozen=True)
class TranscriptionIn(Frame):
    """ACS's own recognition result (TRANSCRIPTION mode)."""

    text: str
    final: bool
    confidence: float = 0.0
    words: tuple[Word, ...] = ()
    participant: str = ""
    offset_ticks: int = 0
    duration_ticks: int = 0


# --- made by the stages ---------------------------------------------------------------------------
@dataclass(frozen=True)
class UserStartedSpeaking(Frame):
    at: float  # time.monotonic()


@dataclass(frozen=True)
class Transcript(Frame):
    """What the recogniser heard so far (partial) or for the whole utterance (final)."""

    text: str
    final: bool
    at: float


@dataclass(frozen=True)
class EndOfTurn(Frame):
    """The user finished: the final text, when their speech ended, and when we knew."""

    text: str
    speech_ended_at: float
    final_at: float


@dataclass(frozen=True)
class LLMText(Frame):
    """A clause of the reply, ready to speak; ``first`` marks the reply's first clause."""

    text: str
    turn: int
    first: bool = False
    last: bool = False


@dataclass(frozen=True)
class TTSAudio(Frame):
    """Synthesised PCM16 for (part of) clause number ``clause`` of ``turn``, at the call's rate.
    ``text`` is the whole clause's, repeated on each of its chunks; ``last_of_turn`` marks the
    reply's end (its ``pcm`` may be empty)."""

    pcm: bytes
    text: str
    turn: int
    clause: int = 0
    last_of_turn: bool = False


@dataclass(frozen=True)
class Interruption(SystemFrame):
    """The caller spoke over the agent: stop, drop queued work, keep only what was played."""

    at: float
    reason: Literal["speech", "dtmf", "transcription"] = "speech"
    # Every turn up to this one is cancelled: late frames of them are dropped wherever seen.
    turn: int = 0


@dataclass(frozen=True)
class EndOfCall(SystemFrame):
    reason: str = "closed"


@dataclass
class Counters:
    """What one call's parser saw that it could not use (logged once, reported at the end)."""

    unknown_kinds: dict[str, int] = field(default_factory=dict)
    malformed: int = 0
