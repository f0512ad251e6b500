"""Settings of call control (voice/, web/): ACS Call Automation, Event Grid, sessions, Voice Live.

Mixed into :class:`settings.config.Settings`; every field is read from the environment there.
Unset, Conduit talks to the local ACS emulator (``python -m emulators.acs``) on
``ACS_EMULATOR_PORT`` over HTTPS with the emulator's self-signed certificate, as the real SDK
always speaks TLS.
"""

from __future__ import annotations

import base64
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from settings.validation import string_list

# Where the ACS emulator listens unless told otherwise: beside the OpenAI emulator's 8700.
DEFAULT_ACS_EMULATOR_PORT = 8710
# The emulator's access key in dev; not a secret (it only opens the local stand-in). ACS keys are
# base64, and the SDK base64-decodes the key before signing, so the dev key must be base64 too.
ACS_EMULATOR_DEV_KEY = base64.b64encode(b"conduit-dev-acs-access-key").decode()
# The audience ACS puts in its JWTs is the resource's immutable id; the emulator signs for this one
# when ACS_RESOURCE_ID (settings/voice.py) is unset.
ACS_EMULATOR_RESOURCE_ID = "00000000-0000-0000-0000-00000000acs0"


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class CallSettings(BaseModel):
    # --- ACS Call Automation ---------------------------------------------------------------------
    # "endpoint=https://<resource>.communication.azure.com/;accesskey=<base64>". Unset with
    # ACS_ENDPOINT unset: the local emulator. The older accelerator's name still works.
    acs_connection_string: SecretStr | None = Field(
        None, validation_alias=_env("ACS_CONNECTION_STRING", "ACS_CONNECTION_STR")
    )
    # With Entra ID instead of a key: the resource endpoint (DefaultAzureCredential signs).
    acs_endpoint: str | None = Field(None, validation_alias=_env("ACS_ENDPOINT"))
    # A CA bundle to trust for the ACS endpoint; unset: the system's (the emulator's own
    # certificate is trusted automatically when the emulator is the endpoint).
    acs_ca_bundle: str | None = Field(None, validation_alias=_env("ACS_CA_BUNDLE"))
    # The E.164 number calls we place come from (create_call's source_caller_id_number).
    acs_source_number: str | None = Field(
        None, validation_alias=_env("ACS_SOURCE_PHONE_NUMBER", "ACS_SOURCE_NUMBER")
    )
    # Where ACS reaches us: callbacks and the media socket are built on it. Must be public HTTPS in
    # production (a dev tunnel or the app's hostname). Unset: http://WEB_HOST:WEB_PORT (dev only).
    calls_public_base_url: str | None = Field(
        None, validation_alias=_env("CALLS_PUBLIC_BASE_URL", "BASE_URL")
    )
    # 16 kHz is what speech recognition works at; 24 kHz only when the engines want it (Voice
    # Live's default output), so nothing is resampled on the way.
    acs_audio_sample_rate: Literal[16000, 24000] = Field(
        16000, validation_alias=_env("ACS_AUDIO_SAMPLE_RATE")
    )
    # The locale ACS transcribes in (TRANSCRIPTION mode only).
    acs_transcription_locale: str = Field(
        "en-US", validation_alias=_env("ACS_TRANSCRIPTION_LOCALE")
    )
    # Caller ids (E.164 numbers or raw ids) allowed to reach the agent; empty: everyone who is not
    # denied. Comma-separated or a JSON list.
    calls_allowed_callers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("CALLS_ALLOWED_CALLERS")
    )
    calls_denied_callers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("CALLS_DENIED_CALLERS")
    )
    # Event Grid retries a delivery for up to 24 hours: an event id is remembered that long, so a
    # redelivered IncomingCall is never answered twice.
    eventgrid_dedup_s: int = Field(
        24 * 3600, ge=60, validation_alias=_env("EVENTGRID_DEDUP_SECONDS")
    )

    # --- sessions in Redis (MemoManager) ---------------------------------------------------------
    # A call's history and context outlive it this long (the older accelerator's hour), so a
    # caller who calls back, or a dashboard opened later, still finds them.
    session_ttl_s: int = Field(3600, ge=60, validation_alias=_env("SESSION_TTL_SECONDS"))
    # Bounds on what one session may hold in Redis: the oldest turns go first.
    session_max_messages: int = Field(
        200, ge=2, le=10000, validation_alias=_env("SESSION_MAX_MESSAGES")
    )
    session_max_bytes: int = Field(256 * 1024, ge=1024, validation_alias=_env("SESSION_MAX_BYTES"))

    # --- live updates (ConnectionManager) --------------------------------------------------------
    # Messages a slow viewer may fall behind by before its oldest are dropped.
    connection_queue_size: int = Field(
        256, ge=1, le=100000, validation_alias=_env("CONNECTION_QUEUE_SIZE")
    )

    # --- resource pools ---------------------------------------------------------------------------
    # Engine sets (recogniser, synthesiser, VAD) warmed at start, per process; a call holds one.
    # More calls than this wait up to POOL_ACQUIRE_TIMEOUT_SECONDS, then their socket is closed
    # (1013). The LLM client is one thread-safe client per process, not pooled.
    stt_pool_size: int = Field(4, ge=1, le=1000, validation_alias=_env("STT_POOL_SIZE"))
    # Long enough for a call that is ending to give its engines back; short enough that a caller
    # is not left in silence.
    pool_acquire_timeout_s: float = Field(
        2.0, gt=0, le=60, validation_alias=_env("POOL_ACQUIRE_TIMEOUT_SECONDS")
    )

    # --- voices ----------------------------------------------------------------------------------
    # JSON file: {"aliases": {"name": {"neural_voice", "style", "rate"}}, "languages":
    # {"es-ES": "alias or voice"}, "default": "alias"}; unset: the built-in aliases.
    voice_config_file: str | None = Field(None, validation_alias=_env("VOICE_CONFIG_FILE"))

    # --- Voice Live (ACS_STREAMING_MODE=VOICE_LIVE) ----------------------------------------------
    # wss://<resource>.services.ai.azure.com (the path is added); unset: VOICE_LIVE is unusable.
    voice_live_endpoint: str | None = Field(
        None, validation_alias=_env("AZURE_VOICE_LIVE_ENDPOINT", "VOICE_LIVE_ENDPOINT")
    )
    voice_live_model: str = Field(
        "gpt-4o", validation_alias=_env("AZURE_VOICE_LIVE_MODEL", "VOICE_LIVE_MODEL")
    )
    voice_live_api_version: str = Field(
        "2025-05-01-preview", validation_alias=_env("AZURE_VOICE_LIVE_API_VERSION")
    )
    # Unset: Entra ID (DefaultAzureCredential, scope https://ai.azure.com/.default).
    voice_live_api_key: SecretStr | None = Field(
        None, validation_alias=_env("AZURE_VOICE_LIVE_API_KEY", "VOICE_LIVE_API_KEY")
    )
    # A neural voice, or an alias of VOICE_CONFIG_FILE.
    voice_live_voice: str = Field(
        "en-US-Ava:DragonHDLatestNeural", validation_alias=_env("AZURE_VOICE_LIVE_VOICE")
    )
    voice_live_instructions: str = Field(
        "You are a helpful phone assistant. Answer briefly.",
        validation_alias=_env("AZURE_VOICE_LIVE_INSTRUCTIONS"),
    )
    # Said first, so the caller knows the line is live.
    voice_live_greeting: str = Field(
        "Hello, how can I help?", validation_alias=_env("AZURE_VOICE_LIVE_GREETING")
    )

    # --- the ACS emulator (emulators/acs) --------------------------------------------------------
    acs_emulator_host: str = Field("127.0.0.1", validation_alias=_env("ACS_EMULATOR_HOST"))
    acs_emulator_port: int = Field(
        DEFAULT_ACS_EMULATOR_PORT, ge=1, le=65535, validation_alias=_env("ACS_EMULATOR_PORT")
    )
    # Its certificate, key, JWT signing key and call reports.
    acs_emulator_dir: str = Field(".data/acs-emulator", validation_alias=_env("ACS_EMULATOR_DIR"))
    # Where the emulator rings: Conduit's Event Grid route, with the credential it needs.
    acs_emulator_target_url: str | None = Field(
        None, validation_alias=_env("ACS_EMULATOR_TARGET_URL")
    )
    acs_emulator_target_api_key: SecretStr | None = Field(
        None, validation_alias=_env("ACS_EMULATOR_TARGET_API_KEY")
    )

    @field_validator("calls_allowed_callers", "calls_denied_callers", mode="before")
    @classmethod
    def _parse_callers(cls, value: object) -> object:
        return string_list(value)

    # --- derived values --------------------------------------------------------------------------
    @property
    def acs_emulator_url(self) -> str:
        return f"https://{self.acs_emulator_host}:{self.acs_emulator_port}"

    @property
    def embedded_acs(self) -> bool:
        """True when no ACS resource is configured and the local emulator stands in."""
        return self.acs_connection_string is None and self.acs_endpoint is None

    def acs_connection(self) -> str:
        """The connection string the SDK is built from (the emulator's when none is set)."""
        if self.acs_connection_string is not None:
            return self.acs_connection_string.get_secret_value()
        return f"endpoint={self.acs_emulator_url}/;accesskey={ACS_EMULATOR_DEV_KEY}"
