"""The ACS media-streaming wire format, both ways, without I/O (a serializer, as pipecat has).

Inbound messages are JSON objects ``{"kind": ..., "<kind>": {...}}``; ACS writes ``kind`` and the
payload keys in camelCase while samples and older SDKs use PascalCase, so keys are matched without
regard to case. :meth:`AcsParser.parse` turns one message into a typed frame
(:mod:`voice.frames`) or ``None``; it never raises: unknown kinds and malformed messages are
counted, and each different problem is logged once per call.

Outbound, the two messages the agent sends (PascalCase, as Microsoft's samples write them)::

    {"Kind": "AudioData", "AudioData": {"Data": "<base64 PCM16>"}, "StopAudio": null}
    {"Kind": "StopAudio", "AudioData": null, "StopAudio": {}}
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from voice.frames import (
    AudioIn,
    AudioMetadata,
    Counters,
    Dtmf,
    Frame,
    TranscriptionIn,
    TranscriptionMetadata,
    Word,
)

log = logging.getLogger("conduit.voice.protocol")

# The PCM rates ACS streams (AudioFormat.PCM16_K_MONO / PCM24_K_MONO).
SUPPORTED_SAMPLE_RATES = frozenset({16000, 24000})
DTMF_DIGITS = frozenset("0123456789*#ABCD")
# ACS names DTMF tones by word in some payloads ("pound", "asterisk", "one" ...).
DTMF_NAMES = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "asterisk": "*", "star": "*", "pound": "#",
    "hash": "#",
}  # fmt: skip


class MalformedFrame(ValueError):
    """A known kind whose payload is not what ACS sends; the message says what is wrong."""


def _get(mapping: Mapping[str, Any], name: str) -> Any:
    """``mapping[name]`` matched without regard to case; None when absent."""
    if name in mapping:
        return mapping[name]
    lowered = name.lower()
    for key, value in mapping.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return None


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedFrame(f"{what} must be an object")
    return value


def _text(value: Any, what: str, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise MalformedFrame(f"{what} must be a string")
    return value


def _int(value: Any, what: str, default: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedFrame(f"{what} must be a number")
    if not math.isfinite(value) or abs(value) > 2**62:
        raise MalformedFrame(f"{what} is out of range")
    return int(value)


def _audio_metadata(payload: Mapping[str, Any]) -> AudioMetadata:
    rate = _int(_get(payload, "sampleRate"), "audioMetadata.sampleRate")
    if rate not in SUPPORTED_SAMPLE_RATES:
        raise MalformedFrame(f"audioMetadata.sampleRate {rate} is not 16000 or 24000")
    channels = _int(_get(payload, "channels"), "audioMetadata.channels", 1)
    if channels != 1:
        raise MalformedFrame("audioMetadata.channels must be 1 (mixed mono)")
    encoding = _text(_get(payload, "encoding"), "audioMetadata.encoding", "PCM")
    if encoding.upper() != "PCM":
        raise MalformedFrame(f"audioMetadata.encoding {encoding!r} is not PCM")
    return AudioMetadata(
        sample_rate=rate,
        channels=channels,
        encoding=encoding,
        subscription_id=_text(_get(payload, "subscriptionId"), "audioMetadata.subscriptionId"),
        length=_int(_get(payload, "length"), "audioMetadata.length"),
    )


def _audio_data(payload: Mapping[str, Any]) -> AudioIn:
    data = _text(_get(payload, "data"), "audioData.data")
    silent = _get(payload, "silent")
    if silent is not None and not isinstance(silent, bool):
        raise MalformedFrame("audioData.silent must be true or false")
    try:
        pcm = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedFrame("audioData.data is not base64") from None
    if len(pcm) % 2:
        raise MalformedFrame("audioData.data is not 16-bit PCM (odd length)")
    return AudioIn(
        pcm=pcm,
        silent=bool(silent),
        timestamp=_text(_get(payload, "timestamp"), "audioData.timestamp"),
        participant=_text(_get(payload, "participantRawID"), "audioData.participantRawID"),
    )


def _dtmf(payload: Mapping[str, Any]) -> Dtmf:
    data = _text(_get(payload, "data"), "dtmfData.data").strip()
    digit = DTMF_NAMES.get(data.lower(), data.upper())
    if digit not in DTMF_DIGITS:
        raise MalformedFrame("dtmfData.data is not a DTMF tone")
    return Dtmf(digit)


def _transcription_metadata(payload: Mapping[str, Any]) -> TranscriptionMetadata:
    where = "transcriptionMetadata"
    return TranscriptionMetadata(
        locale=_text(_get(payload, "locale"), f"{where}.locale"),
        call_connection_id=_text(_get(payload, "callConnectionId"), f"{where}.callConnectionId"),
        subscription_id=_text(_get(payload, "subscriptionId"), f"{where}.subscriptionId"),
        correlation_id=_text(_get(payload, "correlationId"), f"{where}.correlationId"),
    )


def _transcription_data(payload: Mapping[str, Any]) -> TranscriptionIn:
    where = "transcriptionData"
    status = _text(_get(payload, "resultStatus"), f"{where}.resultStatus", "Final")
    if status.lower() not in ("final", "intermediate"):
        raise MalformedFrame(f"{where}.resultStatus must be Final or Intermediate")
    words_in = _get(payload, "words") or []
    if not isinstance(words_in, list):
        raise MalformedFrame(f"{where}.words must be an array")
    words = []
    for item in words_in:
        word = _object(item, f"{where}.words[]")
        words.append(
            Word(
                text=_text(_get(word, "text"), f"{where}.words[].text"),
                offset_ticks=_int(_get(word, "offset"), f"{where}.words[].offset"),
                duration_ticks=_int(_get(word, "duration"), f"{where}.words[].duration"),
            )
        )
    confidence = _get(payload, "confidence")
    if confidence is not None and (
        isinstance(confidence, bool) or not isinstance(confidence, int | float)
    ):
        raise MalformedFrame(f"{where}.confidence must be a number")
    return TranscriptionIn(
        text=_text(_get(payload, "text"), f"{where}.text"),
        final=status.lower() == "final",
        confidence=float(confidence or 0.0),
        words=tuple(words),
        participant=_text(_get(payload, "participantRawID"), f"{where}.participantRawID"),
        offset_ticks=_int(_get(payload, "offset"), f"{where}.offset"),
        duration_ticks=_int(_get(payload, "duration"), f"{where}.duration"),
    )


_PARSERS = {
    "audiometadata": ("audioMetadata", _audio_metadata),
    "audiodata": ("audioData", _audio_data),
    "dtmfdata": ("dtmfData", _dtmf),
    "transcriptionmetadata": ("transcriptionMetadata", _transcription_metadata),
    "transcriptiondata": ("transcriptionData", _transcription_data),
}


class AcsParser:
    """Parses one call's inbound messages; keeps that call's counters of what it dropped."""

    def __init__(self, call_id: str = "") -> None:
        self.call_id = call_id
        self.counters = Counters()
        self._logged: set[str] = set()

    def parse(self, message: str | bytes) -> Frame | None:
        """The frame ``message`` carries, or None (unknown kind, malformed: counted)."""
        try:
            document = json.loads(message)
        except (ValueError, RecursionError):
            self._malformed("not JSON")
            return None
        if not isinstance(document, dict):
            self._malformed("not a JSON object")
            return None
        kind = _get(document, "kind")
        if not isinstance(kind, str):
            self._malformed("no kind")
            return None
        parser = _PARSERS.get(kind.lower())
        if parser is None:
            self._unknown(kind)
            return None
        payload_key, parse = parser
        try:
            return parse(_object(_get(document, payload_key), payload_key))
        except MalformedFrame as error:
            self._malformed(str(error))
            return None

    def _malformed(self, why: str) -> None:
        self.counters.malformed += 1
        self._log_once(f"malformed:{why}", "dropped a malformed media message: %s", why)

    def _unknown(self, kind: str) -> None:
        kind = kind[:40]
        counts = self.counters.unknown_kinds
        if kind in counts or len(counts) < 32:  # bounded: a peer cannot grow this dict
            counts[kind] = counts.get(kind, 0) + 1
        self._log_once(f"kind:{kind}", "ignored media messages of unknown kind %r", kind)

    def _log_once(self, key: str, message: str, detail: str) -> None:
        if key in self._logged or len(self._logged) >= 64:
            return
        self._logged.add(key)
        log.warning(message, detail, extra={"call_id": self.call_id})


def audio_message(pcm: bytes) -> str:
    """The outbound AudioData message playing ``pcm`` (PCM16 mono at the call's rate)."""
    data = base64.b64encode(pcm).decode("ascii")
    return json.dumps({"Kind": "AudioData", "AudioData": {"Data": data}, "StopAudio": None})


STOP_AUDIO_MESSAGE = json.dumps({"Kind": "StopAudio", "AudioData": None, "StopAudio": {}})


def stop_audio_message() -> str:
    """The outbound StopAudio message: ACS drops what it has queued to play."""
    return STOP_AUDIO_MESSAGE


# --- the caller's side (the simulator, tests): ACS's inbound messages ---------------------------
def inbound_audio_metadata(sample_rate: int, subscription_id: str = "") -> str:
    return json.dumps(
        {
            "kind": "AudioMetadata",
            "audioMetadata": {
                "subscriptionId": subscription_id,
                "encoding": "PCM",
                "sampleRate": sample_rate,
                "channels": 1,
                "length": sample_rate * 20 // 1000 * 2,
            },
        }
    )


def inbound_audio(
    pcm: bytes, timestamp: str = "", participant: str = "", silent: bool = False
) -> str:
    return json.dumps(
        {
            "kind": "AudioData",
            "audioData": {
                "timestamp": timestamp,
                "participantRawID": participant,
                "data": base64.b64encode(pcm).decode("ascii"),
                "silent": silent,
            },
        }
    )


def inbound_dtmf(digit: str) -> str:
    return json.dumps({"kind": "DtmfData", "dtmfData": {"data": digit}})


def inbound_transcription(text: str, final: bool, confidence: float = 0.9) -> str:
    return json.dumps(
        {
            "kind": "TranscriptionData",
            "transcriptionData": {
                "text": text,
                "format": "display",
                "confidence": confidence,
                "offset": 0,
                "duration": 0,
                "words": [{"text": word, "offset": 0, "duration": 0} for word in text.split()],
                "participantRawID": "8:acs:caller",
                "resultStatus": "Final" if final else "Intermediate",
            },
        }
    )


def outbound_kind(message: str | bytes) -> tuple[str, bytes | None]:
    """What an agent's outbound message is: ("AudioData", pcm), ("StopAudio", None), or
    ("", None) when it is neither (for the simulator and tests, case-insensitive as ACS is)."""
    try:
        document = json.loads(message)
    except ValueError:
        return "", None
    if not isinstance(document, dict):
        return "", None
    kind = _get(document, "kind")
    if isinstance(kind, str) and kind.lower() == "audiodata":
        payload = _get(document, "audioData")
        data = _get(payload, "data") if isinstance(payload, Mapping) else None
        try:
            return "AudioData", base64.b64decode(data or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            return "", None
    if isinstance(kind, str) and kind.lower() == "stopaudio":
        return "StopAudio", None
    return "", None
