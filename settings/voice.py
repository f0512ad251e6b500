"""Settings of the voice agent's media path (voice/): streaming mode, speech engines, VAD, limits.

Mixed into :class:`settings.config.Settings`; every field is read from the environment there.
The defaults are the laptop set-up: local engines (pocketsphinx, espeak-ng, Silero VAD), the
emulator LLM, and ACS's real token issuer and keys (tests serve their own JWKS).
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr

# Where ACS publishes the keys it signs media-socket and callback tokens with.
ACS_JWKS_URL = "https://acscallautomation.communication.azure.com/calling/keys"
ACS_ISSUER = "https://acscallautomation.communication.azure.com"


class VoiceSettings(BaseModel):
    # --- what ACS streams and who may stream it -----------------------------------------------
    # MEDIA: audio both ways (our STT/TTS); TRANSCRIPTION: ACS sends text, we answer in audio;
    # VOICE_LIVE: relay to Azure Voice Live (registered by the call-control code).
    acs_streaming_mode: Literal["MEDIA", "TRANSCRIPTION", "VOICE_LIVE"] = Field(
        "MEDIA", validation_alias=AliasChoices("ACS_STREAMING_MODE")
    )
    # The ACS resource's immutable id: the audience of every token ACS signs. Unset: media
    # sockets are refused outside AUTH_DISABLED dev mode (no audience, no check possible).
    acs_resource_id: str | None = Field(
        None, validation_alias=AliasChoices("ACS_RESOURCE_ID", "ACS_AUDIENCE")
    )
    acs_jwks_url: str = Field(ACS_JWKS_URL, validation_alias=AliasChoices("ACS_JWKS_URL"))
    acs_issuer: str = Field(ACS_ISSUER, validation_alias=AliasChoices("ACS_ISSUER"))

    # --- bounds on one socket and one process ---------------------------------------------------
    # One 20 ms frame of 24 kHz audio is ~1.4 KB of JSON; a TranscriptionData with word timings
    # a few KB. 64 KiB leaves room for long final transcripts and none for abuse.
    media_max_frame_bytes: int = Field(
        64 * 1024, ge=2048, validation_alias=AliasChoices("MEDIA_MAX_FRAME_BYTES")
    )
    # ACS sends 50 frames a second; after a network stall it catches up in a burst.
    media_max_frames_per_second: int = Field(
        200, ge=50, validation_alias=AliasChoices("MEDIA_MAX_FRAMES_PER_SECOND")
    )
    # Each call holds one gunicorn thread for its socket (web/gunicorn_conf.py has 16), so keep
    # this below that count or HTTP requests queue behind calls.
    media_max_calls: int = Field(12, ge=1, validation_alias=AliasChoices("MEDIA_MAX_CALLS"))

    # --- speech engines ---------------------------------------------------------------------
    # local: pocketsphinx + espeak-ng in-process (offline); azure: Azure AI Speech.
    voice_engine: Literal["local", "azure"] = Field(
        "local", validation_alias=AliasChoices("VOICE_ENGINE")
    )
    # Azure Speech: a key with a region or endpoint; no key: Entra ID (needs the endpoint).
    speech_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("AZURE_SPEECH_KEY", "SPEECH_KEY")
    )
    speech_region: str | None = Field(
        None, validation_alias=AliasChoices("AZURE_SPEECH_REGION", "SPEECH_REGION")
    )
    speech_endpoint: str | None = Field(
        None, validation_alias=AliasChoices("AZURE_SPEECH_ENDPOINT", "SPEECH_ENDPOINT")
    )
    # Entra ID tokens for Speech name the resource: "aad#<resource id>#<token>".
    speech_resource_id: str | None = Field(
        None, validation_alias=AliasChoices("AZURE_SPEECH_RESOURCE_ID")
    )
    speech_language: str = Field(
        "en-US", validation_alias=AliasChoices("AZURE_SPEECH_LANGUAGE", "SPEECH_LANGUAGE")
    )
    speech_voice: str = Field(
        "en-US-JennyNeural", validation_alias=AliasChoices("AZURE_SPEECH_VOICE", "TTS_VOICE")
    )
    # espeak-ng voice of the local engine ("en-us", "en-gb+f3" ...).
    local_tts_voice: str = Field("en-us", validation_alias=AliasChoices("LOCAL_TTS_VOICE"))
    # Phrases (one a line) the local recogniser decodes against as a grammar: exact on known
    # sentences, for demos and tests. Unset: pocketsphinx's open en-US language model.
    local_stt_phrases_file: str | None = Field(
        None, validation_alias=AliasChoices("LOCAL_STT_PHRASES_FILE")
    )

    # --- turn taking (pipecat's VADParams) ----------------------------------------------------
    vad_engine: Literal["silero", "webrtc"] = Field(
        "silero", validation_alias=AliasChoices("VAD_ENGINE")
    )
    # Silero's speech probability above which a 32 ms window counts as speech (its own default).
    vad_confidence: float = Field(0.5, gt=0, lt=1, validation_alias=AliasChoices("VAD_CONFIDENCE"))
    # Speech this long starts a user turn and interrupts the agent: two Silero windows, so a
    # click does not barge in but the agent stops within ~0.1 s of the caller starting to speak.
    vad_start_secs: float = Field(
        0.064, ge=0.02, le=1, validation_alias=AliasChoices("VAD_START_SECONDS")
    )
    # Silence this long ends the user's speech. Longer than espeak-ng's and most people's
    # pauses between words, short enough that the answer starts ~0.3 s after the last word.
    vad_stop_secs: float = Field(
        0.2, ge=0.06, le=3, validation_alias=AliasChoices("VAD_STOP_SECONDS")
    )
    # An utterance is cut and answered after this long, so an open line cannot grow a turn
    # (and the recogniser's memory) without bound.
    voice_max_utterance_secs: float = Field(
        30.0, gt=1, validation_alias=AliasChoices("VOICE_MAX_UTTERANCE_SECONDS")
    )

    # --- the LLM turn -------------------------------------------------------------------------
    voice_system_prompt: str = Field(
        "You are a helpful phone agent. Answer in one or two short spoken sentences, "
        "without lists or markup.",
        validation_alias=AliasChoices("VOICE_SYSTEM_PROMPT"),
    )
    # Spoken answers are short; a cap also bounds what one turn charges to the quota.
    voice_max_tokens: int = Field(80, ge=1, validation_alias=AliasChoices("VOICE_MAX_TOKENS"))
    # The history sent with each turn is cut, oldest first, to this many tokens.
    voice_history_tokens: int = Field(
        2000, ge=100, validation_alias=AliasChoices("VOICE_HISTORY_TOKENS")
    )
    # The app id voice turns are charged to in the shared quota.
    voice_app_id: str = Field("voice", validation_alias=AliasChoices("VOICE_APP_ID"))

    # --- playback ---------------------------------------------------------------------------
    # Audio sent ahead of real time. ACS plays from its own buffer; a lead keeps that buffer from
    # running dry on a late thread, and a small one leaves little for StopAudio to flush.
    voice_playback_lead_ms: int = Field(
        100, ge=20, le=100, validation_alias=AliasChoices("VOICE_PLAYBACK_LEAD_MS")
    )
