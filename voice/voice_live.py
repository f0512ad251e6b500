"""Azure Voice Live's wire format, without I/O: the URL, the client events Conduit sends, and the
server events it acts on (the Azure OpenAI Realtime names; Azure-only fields where noted).

The relay keeps ACS's rate end to end: the input rate is set to what ACS sends
(``input_audio_sampling_rate``) and the output format to the same rate (``pcm16_16000hz`` for
16 kHz, ``pcm16`` = 24 kHz), so no audio is resampled on either way.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlencode

from settings import Settings
from voice.voices import VoiceConfiguration

# Azure semantic VAD, tuned like the media path's VAD (settings/voice.py): speech starts a turn
# after a short prefix, ends after a short silence; its end-of-utterance model avoids cutting
# a caller who pauses mid-sentence.
VAD_THRESHOLD = 0.5
VAD_PREFIX_PADDING_MS = 200
VAD_SILENCE_MS = 350
OUTPUT_FORMATS = {16000: "pcm16_16000hz", 24000: "pcm16", 8000: "pcm16_8000hz"}
# Entra ID scope of Azure AI Foundry resources (Voice Live).
ENTRA_SCOPE = "https://ai.azure.com/.default"


class VoiceLiveError(RuntimeError):
    """Voice Live cannot be used as configured; the message names the setting."""


def realtime_url(settings: Settings) -> str:
    endpoint = settings.voice_live_endpoint
    if not endpoint:
        raise VoiceLiveError("ACS_STREAMING_MODE=VOICE_LIVE needs AZURE_VOICE_LIVE_ENDPOINT")
    scheme, _, rest = endpoint.rstrip("/").partition("://")
    ws_scheme = {"https": "wss", "http": "ws"}.get(scheme, scheme)
    query = urlencode(
        {"api-version": settings.voice_live_api_version, "model": settings.voice_live_model}
    )
    return f"{ws_scheme}://{rest}/voice-live/realtime?{query}"


def session_update(settings: Settings, sample_rate: int) -> dict[str, Any]:
    if sample_rate not in OUTPUT_FORMATS:
        raise VoiceLiveError(f"Voice Live takes 8, 16 or 24 kHz audio, not {sample_rate} Hz")
    # AZURE_VOICE_LIVE_VOICE may name an alias of VOICE_CONFIG_FILE (support_contact_center ...).
    voice = VoiceConfiguration.from_settings(settings).resolve(settings.voice_live_voice)
    return {
        "type": "session.update",
        "session": {
            "modalities": ["text", "audio"],
            "instructions": settings.voice_live_instructions,
            "voice": {"name": voice.neural_voice, "type": "azure-standard"},
            "input_audio_format": "pcm16",
            "input_audio_sampling_rate": sample_rate,
            "output_audio_format": OUTPUT_FORMATS[sample_rate],
            "input_audio_transcription": {"model": "whisper-1"},
            "turn_detection": {
                "type": "azure_semantic_vad",
                "threshold": VAD_THRESHOLD,
                "prefix_padding_ms": VAD_PREFIX_PADDING_MS,
                "silence_duration_ms": VAD_SILENCE_MS,
            },
        },
    }


def greeting(text: str) -> dict[str, Any]:
    return {
        "type": "response.create",
        "response": {"instructions": f"Greet the caller with exactly: {text}"},
    }


def append_audio(pcm: bytes) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode("ascii")}


def dtmf_item(digit: str) -> list[dict[str, Any]]:
    """A key press as a user message, then a response to it."""
    return [
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": f"(The caller pressed the key {digit}.)"}
                ],
            },
        },
        {"type": "response.create"},
    ]


def cancel_response() -> dict[str, Any]:
    return {"type": "response.cancel"}


def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


def decode(message: str | bytes) -> dict[str, Any] | None:
    """A server event, or None when it is not a JSON object with a type."""
    try:
        event = json.loads(message)
    except (TypeError, ValueError):
        return None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return None
    return event


def audio_delta(event: dict[str, Any]) -> bytes:
    try:
        return base64.b64decode(event.get("delta") or "", validate=True)
    except ValueError:
        return b""
