"""The one typed Settings object: every environment variable Conduit reads is declared here.

Read once per process with :func:`get_settings` (cached). Values come from the environment, then a
``.env`` file in the working directory, then the defaults below, which are the embedded laptop
set-up: a local Redis, the local bus instead of Service Bus, and the emulators instead of Azure.

Names the older services used (``APP_TPM_QUOTA``, ``WHISPER_REQUESTS_PER_MINUTE`` ...) keep working:
each field lists them as ``AliasChoices``, the newer name first. A wrong value stops start-up with
one line naming the variable and what was expected (:class:`SettingsError`).

    >>> settings = get_settings()    # the process's Settings; tests build their own:
    >>> load_settings(tpm_quota=450000).tpm_quota   # else APP_TPM_QUOTA, default 128000
    450000
    >>> load_settings(tpm_quota=0)
    Traceback (most recent call last):
    ...
    settings.config.SettingsError: APP_TPM_QUOTA=0 is not valid: Input should be greater than ...
"""

from __future__ import annotations

import json
import logging
import os
import sys
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from settings.calls import CallSettings
from settings.compat import CompatSettings
from settings.jsonsafe import DEFAULT_MAX_DEPTH
from settings.logship import LogShippingSettings
from settings.search import SearchSettings
from settings.telemetry import TelemetrySettings
from settings.validation import string_list
from settings.voice import VoiceSettings

# The embedded emulator serves every deployment on this address unless told otherwise.
DEFAULT_EMULATOR_PORT = 8700
# The key the emulator accepts in dev; not a secret: it only ever opens a local stand-in.
EMULATOR_DEV_KEY = "conduit-dev"


class SettingsError(ValueError):
    """A setting has a value Conduit cannot use; the message names the variable."""


# Redis's AOF fsync policies the embedded server is started with ("no" is not offered: it leaves
# fsync to the OS, up to 30 s on Linux).
AppendFsync = Literal["always", "everysec"]


# The quota pools, one per kind of Azure OpenAI deployment: the one spelling of their names that
# quota/, tasks/ and the settings share.
PoolName = Literal["completion", "embedding", "whisper"]


class Route(BaseModel):
    """One input queue, the processor that handles its messages, and where results go."""

    in_queue: str
    processor: str
    out_queue: str

    @classmethod
    def parse(cls, text: str) -> Route:
        parts = [part.strip() for part in text.split(":")]
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"route {text!r} must look like in_queue:processor:out_queue")
        return cls(in_queue=parts[0], processor=parts[1], out_queue=parts[2])


class Deployment(BaseModel):
    """One Azure OpenAI deployment a logical model spills over to, with its own quota."""

    name: str
    tpm: int = Field(ge=0)  # 0 for whisper: Azure limits Whisper by requests only
    rpm: int = Field(ge=1)
    # Unset: the pool's endpoint (APP_OPENAI_API_BASE ...) and key.
    endpoint: str | None = None
    api_key: SecretStr | None = None


class Pool(BaseModel):
    """What a quota pool needs to know: its logical model (``deployment``, the name callers use)
    and the ordered deployments that serve it, each with its own limits. Without spill-over
    settings a pool has one deployment, named like the model, with the pool's limits."""

    name: PoolName
    deployment: str
    tpm: int  # 0 for whisper: Azure limits Whisper by requests only
    rpm: int
    deployments: list[Deployment] = Field(default_factory=list)

    def model_post_init(self, context: object, /) -> None:
        if not self.deployments:
            self.deployments = [Deployment(name=self.deployment, tpm=self.tpm, rpm=self.rpm)]


def _parse_deployments(value: object) -> object:
    """APP_*_DEPLOYMENTS: a JSON list of {"name", "tpm", "rpm", "endpoint"?, "api_key"?}."""
    if isinstance(value, str):
        text = value.strip()
        return json.loads(text) if text else None
    return value


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(
    SearchSettings,
    VoiceSettings,
    CallSettings,
    LogShippingSettings,
    TelemetrySettings,
    CompatSettings,
    BaseSettings,
):
    """Every setting. The sections of the second half (search, voice, calls, log shipping,
    telemetry) live in their own modules beside this one and are mixed in here."""

    model_config = SettingsConfigDict(
        # Tests point CONDUIT_ENV_FILE at /dev/null so a developer's .env cannot leak in.
        env_file=os.environ.get("CONDUIT_ENV_FILE", ".env"),
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        populate_by_name=True,
    )

    # --- process and logging ---------------------------------------------------------------------
    app_name: str = Field("conduit", validation_alias=_env("APP_NAME"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias=_env("LOG_LEVEL")
    )
    # auto: coloured console on a TTY, JSON lines otherwise.
    log_format: Literal["auto", "console", "json"] = Field(
        "auto", validation_alias=_env("LOG_FORMAT")
    )
    # When set, logs also go to <log_dir>/<app_name>.log, rotated at midnight.
    log_dir: str | None = Field(None, validation_alias=_env("LOG_DIR"))
    logs_retention_days: int = Field(30, ge=1, validation_alias=_env("APP_LOGS_RETENTION_DAYS"))

    # --- Redis: broker, results, quota, local bus, outbox ----------------------------------------
    # Unset: `make run` and the tests start an embedded redis-server and export its URL.
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"))
    redis_data_dir: str = Field(".data/redis", validation_alias=_env("REDIS_DATA_DIR"))
    redis_port: int = Field(6379, ge=1, le=65535, validation_alias=_env("REDIS_PORT"))
    # How often the embedded Redis fsyncs its AOF (settings/redis_server.py). "auto": "always"
    # when the bus is Service Bus, "everysec" with the local bus. Only with Service Bus can a
    # power loss lose a message: it completes messages outside Redis, so the last second of
    # tasks "everysec" may lose were already completed there; "always" closes that, at a cost
    # (bridge/README.md). The local bus completes messages in the same AOF, after their tasks,
    # and a power loss takes both (bridge/durability.py). A REDIS_URL server is configured on
    # its own side: the bridge logs at start what its policy means.
    redis_appendfsync: Literal["auto", "always", "everysec"] = Field(
        "auto", validation_alias=_env("REDIS_APPENDFSYNC")
    )

    # --- Celery worker ---------------------------------------------------------------------------
    worker_pool: Literal["threads", "prefork", "gevent", "solo"] = Field(
        "threads", validation_alias=_env("WORKER_POOL")
    )
    worker_concurrency: int = Field(8, ge=1, le=1000, validation_alias=_env("WORKER_CONCURRENCY"))
    # Hard limit for any one task; the broker's visibility timeout is derived from it.
    task_time_limit_s: int = Field(900, ge=1, validation_alias=_env("TASK_TIME_LIMIT_SECONDS"))
    # How long a message taken by a worker that then died waits before another worker gets it.
    # Unset: task time limit + 5 minutes. Must exceed the task time limit, or a slow task would be
    # handed to a second worker while the first still runs.
    broker_visibility_timeout_s: int | None = Field(
        None, ge=1, validation_alias=_env("BROKER_VISIBILITY_TIMEOUT_SECONDS")
    )
    result_expires_s: int = Field(86400, ge=60, validation_alias=_env("RESULT_EXPIRES_SECONDS"))

    # --- Azure OpenAI: completion ----------------------------------------------------------------
    # Unset: the embedded emulator (emulators/) on 127.0.0.1:EMULATOR_PORT.
    openai_api_base: str | None = Field(None, validation_alias=_env("APP_OPENAI_API_BASE"))
    openai_api_version: str = Field("2024-10-21", validation_alias=_env("APP_OPENAI_API_VERSION"))
    openai_engine: str = Field("gpt-4o", validation_alias=_env("APP_OPENAI_ENGINE"))
    # Unset with a real endpoint: Entra ID (DefaultAzureCredential).
    openai_api_key: SecretStr | None = Field(None, validation_alias=_env("APP_OPENAI_API_KEY"))
    # azure: AzureOpenAI client; openai: any OpenAI-compatible server (vLLM, Ollama, llama.cpp).
    openai_client_kind: Literal["azure", "openai"] = Field(
        "azure", validation_alias=_env("APP_OPENAI_CLIENT")
    )
    openai_timeout_s: float = Field(60.0, gt=0, validation_alias=_env("APP_OPENAI_TIMEOUT_SECONDS"))
    tpm_quota: int = Field(128000, ge=1, validation_alias=_env("APP_TPM_QUOTA"))
    rpm_quota: int = Field(250, ge=1, validation_alias=_env("APP_RPM_QUOTA"))
    # Spill-over: the deployments APP_OPENAI_ENGINE (then a logical model name) is served by, in
    # order, as a JSON list of {"name", "tpm", "rpm", "endpoint"?, "api_key"?}. Unset: one
    # deployment, APP_OPENAI_ENGINE itself, with APP_TPM_QUOTA / APP_RPM_QUOTA.
    openai_deployments: Annotated[list[Deployment] | None, NoDecode] = Field(
        None, validation_alias=_env("APP_OPENAI_DEPLOYMENTS")
    )

    # --- Azure OpenAI: embedding -----------------------------------------------------------------
    embedding_api_base: str | None = Field(None, validation_alias=_env("APP_EMBEDDING_API_BASE"))
    embedding_api_version: str = Field(
        "2024-10-21", validation_alias=_env("APP_EMBEDDING_API_VERSION")
    )
    embedding_engine: str = Field(
        "text-embedding-3-large", validation_alias=_env("APP_EMBEDDING_ENGINE")
    )
    embedding_api_key: SecretStr | None = Field(
        None, validation_alias=_env("APP_EMBEDDING_API_KEY")
    )
    embedding_tpm_quota: int = Field(
        1000000, ge=1, validation_alias=_env("APP_EMBEDDING_TPM_QUOTA")
    )
    embedding_rpm_quota: int = Field(6000, ge=1, validation_alias=_env("APP_EMBEDDING_RPM_QUOTA"))
    # Spill-over for APP_EMBEDDING_ENGINE, as APP_OPENAI_DEPLOYMENTS.
    embedding_deployments: Annotated[list[Deployment] | None, NoDecode] = Field(
        None, validation_alias=_env("APP_EMBEDDING_DEPLOYMENTS")
    )

    # --- Azure OpenAI: Whisper -------------------------------------------------------------------
    # Unset: the completion endpoint and key.
    whisper_api_base: str | None = Field(None, validation_alias=_env("APP_WHISPER_API_BASE"))
    whisper_engine: str = Field("whisper", validation_alias=_env("APP_WHISPER_ENGINE"))
    whisper_rpm_quota: int = Field(
        15, ge=1, validation_alias=_env("APP_WHISPER_RPM_QUOTA", "WHISPER_REQUESTS_PER_MINUTE")
    )
    # Spill-over for APP_WHISPER_ENGINE, as APP_OPENAI_DEPLOYMENTS (tpm 0: requests only).
    whisper_deployments: Annotated[list[Deployment] | None, NoDecode] = Field(
        None, validation_alias=_env("APP_WHISPER_DEPLOYMENTS")
    )
    # Longer recordings are split at silences into chunks at most this long, transcribed at once.
    whisper_chunk_max_s: float = Field(
        600.0, gt=0, validation_alias=_env("APP_WHISPER_CHUNK_MAX_SECONDS")
    )

    # --- quota/ ----------------------------------------------------------------------------------
    # Shorter windows are for benchmarks only; limits stay "per window".
    quota_window_s: int = Field(60, ge=1, le=3600, validation_alias=_env("QUOTA_WINDOW_SECONDS"))
    # A charge stays counted this long past the window, because the upstream counts it from when
    # the request arrives, after we stamped it. A send later than half of it is restamped when it
    # leaves (tasks/upstream.py), so the stamp-to-arrival time is at most half of it plus the wire:
    # measured at 16 threads on a loaded 2-core machine (bench/quota_utilization.py,
    # stamp_to_charge_ms), the wire and the emulator's parse took p90 27 ms, p99 245 ms (cold
    # connections); stamp to arrival p99 640 ms while only sends later than 1 s were restamped,
    # p99 550 ms at load 5 with the half-margin restamp (0.67 s at 20 s). A slower wire costs a
    # 429 at a window turn, which keeps its charge and cools the deployment down for every
    # process. Rounded up to whole buckets (1 s in a 60 s window of 60 buckets, 0.67 s in the
    # benchmark's 20 s). 0 only for an upstream counting at our stamp.
    quota_upstream_margin_s: float = Field(
        0.5, ge=0, le=60, validation_alias=_env("QUOTA_UPSTREAM_MARGIN_SECONDS")
    )
    # How many buckets the window is kept in: a charge counts until its bucket leaves, half a
    # bucket longer than the window on average, and the margin rounds up to whole buckets, so
    # finer buckets give a saturating backlog more of the limit (120 at a 60 s window: 0.988
    # instead of 0.975), at more Lua work per window move and refusal (no more than noise at 120),
    # but the margin rounds up less: raise it with the buckets (quota/README.md, Window).
    # 60 (1 s at 60 s, as Azure's 1 s evaluation): a pool's state is kept in one layout, and every
    # process must count in the same one, so a change needs the pool's keys reset.
    quota_window_buckets: int = Field(
        60, ge=6, le=600, multiple_of=6, validation_alias=_env("QUOTA_WINDOW_BUCKETS")
    )
    # A lock neither reported nor released in this time expires and stays spent (crashed worker).
    quota_lock_ttl_s: int = Field(300, ge=1, validation_alias=_env("QUOTA_LOCK_TTL_SECONDS"))
    # The counter server (web/counter_server.py) grants locks from leases: room charged in Redis
    # that its process grants from in memory for this long (quota/leases.py). At most half the
    # upstream margin: a request granted from a lease reaches the upstream within the margin of
    # the lease's stamp. 0: every lock is decided in Redis, one at a time.
    quota_lease_s: float = Field(0.05, ge=0, le=30, validation_alias=_env("QUOTA_LEASE_SECONDS"))
    # azure: charge the estimate at arrival, never refund (as Azure counts); usage: true up.
    quota_charge_model: Literal["azure", "usage"] = Field(
        "azure", validation_alias=_env("QUOTA_CHARGE_MODEL")
    )
    # Where Conduit's own state lives (quota, outbox, bridge ledger and stats, local bus, fleet
    # metrics); unset: REDIS_URL, so one Redis serves everything, as before. May be a Redis
    # Cluster (redis+cluster:// or rediss+cluster://, or a plain URL with STATE_REDIS_CLUSTER=true)
    # while Celery's broker stays a plain Redis, which kombu requires. QUOTA_REDIS_* are the names
    # from when only quota could move.
    state_redis_url: str | None = Field(
        None, validation_alias=_env("STATE_REDIS_URL", "QUOTA_REDIS_URL")
    )
    state_redis_cluster: bool = Field(
        False, validation_alias=_env("STATE_REDIS_CLUSTER", "QUOTA_REDIS_CLUSTER")
    )
    # Priority lanes: the last tenth of each window (tokens and requests) is kept for interactive
    # calls (voice turns, user-facing requests) whenever one was seen in the last
    # QUOTA_INTERACTIVE_IDLE_SECONDS; then batch may use it all. A tenth: one voice turn per second
    # fits beside a saturating batch on a 128k TPM deployment, and batch keeps nine tenths.
    quota_interactive_reserve: float = Field(
        0.1, ge=0, lt=1, validation_alias=_env("QUOTA_INTERACTIVE_RESERVE")
    )
    # Half a window: a call in progress asks again within seconds; a quiet agent frees the
    # reserve well before the window ends.
    quota_interactive_idle_s: float = Field(
        30.0, gt=0, validation_alias=_env("QUOTA_INTERACTIVE_IDLE_SECONDS")
    )
    # Per-app caps, "app=fraction" comma-separated (or JSON {"app": fraction}): an app over its
    # fraction of a deployment's window is refused while others still fit. Unset: no caps.
    quota_app_shares: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict, validation_alias=_env("QUOTA_APP_SHARES")
    )
    # After a 429 every process skips the deployment for its retry-after, but at most this long
    # (and this long when the 429 has none). Short on purpose: the 429's x-ratelimit-remaining
    # headers are booked at once, so our own count then paces the backlog; the cool-down only has
    # to stop the stampede. Azure's retry-after is when *that* request would fit, up to a whole
    # window, and skipping every request for that long cost a benchmark a quarter of its quota.
    quota_cooldown_s: float = Field(
        3.0, gt=0, le=600, validation_alias=_env("QUOTA_COOLDOWN_SECONDS")
    )
    quota_error_cooldown_s: float = Field(
        5.0, ge=0, le=600, validation_alias=_env("QUOTA_ERROR_COOLDOWN_SECONDS")
    )

    # --- Blob storage (audio references) ---------------------------------------------------------
    blob_connection_string: SecretStr | None = Field(
        None, validation_alias=_env("AZURE_STORAGE_CONNECTION_STRING")
    )
    # With Entra ID instead of a connection string: the account blob URLs may name, e.g.
    # https://myaccount.blob.core.windows.net. Our token is sent to no other host.
    blob_account_url: str | None = Field(None, validation_alias=_env("AZURE_STORAGE_ACCOUNT_URL"))
    # The directory `audio_path` messages may read from; unset: messages cannot name local files
    # (a message must not make a worker read whatever file it names).
    audio_local_root: str | None = Field(None, validation_alias=_env("AUDIO_LOCAL_ROOT"))

    # --- Service Bus and the bridge --------------------------------------------------------------
    # Neither set: the local bus in Redis (same semantics, see bridge/).
    service_bus_namespace: str | None = Field(None, validation_alias=_env("SERVICE_BUS_NAMESPACE"))
    service_bus_connection_string: SecretStr | None = Field(
        None, validation_alias=_env("SERVICE_BUS_CONNECTION_STRING")
    )
    # The older one-service-per-app pair; when both are set they add a route to `routes`.
    service_in_queue: str | None = Field(None, validation_alias=_env("APP_SERVICE_IN_QUEUE"))
    service_out_queue: str | None = Field(None, validation_alias=_env("APP_SERVICE_OUT_QUEUE"))
    service_processor: str = Field("feedback", validation_alias=_env("APP_SERVICE_PROCESSOR"))
    # "in:processor:out" items, comma-separated, or a JSON list of such strings.
    routes: Annotated[list[Route], NoDecode] = Field(
        default_factory=lambda: [
            Route(in_queue="form_iq", processor="feedback", out_queue="form_oq"),
            Route(in_queue="whisper_iq", processor="transcribe", out_queue="whisper_oq"),
            Route(in_queue="reasoner_iq", processor="reasoner", out_queue="reasoner_oq"),
        ],
        validation_alias=_env("CONDUIT_ROUTES"),
    )
    bridge_batch_size: int = Field(32, ge=1, le=1000, validation_alias=_env("BRIDGE_BATCH_SIZE"))
    bridge_prefetch: int = Field(64, ge=0, le=10000, validation_alias=_env("BRIDGE_PREFETCH"))
    # Receiving pauses while a route's Celery queue holds more than this many messages.
    bridge_high_water: int = Field(1000, ge=1, validation_alias=_env("BRIDGE_HIGH_WATER"))
    bridge_max_idle_s: float = Field(10.0, gt=0, validation_alias=_env("BRIDGE_MAX_IDLE_SECONDS"))
    local_bus_lock_duration_s: float = Field(
        60.0, gt=0, validation_alias=_env("LOCAL_BUS_LOCK_DURATION_SECONDS")
    )
    local_bus_max_delivery_count: int = Field(
        10, ge=1, validation_alias=_env("LOCAL_BUS_MAX_DELIVERY_COUNT")
    )
    # Service Bus's default duplicate detection window: a message id sent again within it is
    # dropped.
    local_bus_duplicate_window_s: float = Field(
        600.0, gt=0, validation_alias=_env("LOCAL_BUS_DUPLICATE_WINDOW_SECONDS")
    )
    # The largest message the bridge sends or takes in, and the local bus accepts: Service Bus
    # standard tier's 256 KiB. Raise it on a premium namespace (up to its maximum message size).
    bridge_max_message_bytes: int = Field(
        256 * 1024, ge=1024, validation_alias=_env("BRIDGE_MAX_MESSAGE_BYTES")
    )
    # How deeply a received message's JSON may nest; checked on the text before parsing, so a
    # small body of deep nesting cannot crash the bridge (RecursionError). Messages Conduit
    # defines nest 3 levels at most; Python's recursion limit is 1,000 frames.
    bridge_max_json_depth: int = Field(
        DEFAULT_MAX_DEPTH, ge=1, le=500, validation_alias=_env("BRIDGE_MAX_JSON_DEPTH")
    )
    # Results a dead bridge took but never acknowledged are taken over after idling this long;
    # longer than any send takes, so a live bridge's in-flight send is never taken from it.
    bridge_reclaim_idle_s: float = Field(
        60.0, gt=0, validation_alias=_env("BRIDGE_RECLAIM_IDLE_SECONDS")
    )
    # A published task with neither a result nor a trace in the result backend after this long
    # was lost by the broker (a worker killed as it took it) and is published again.
    # Unset: the broker visibility timeout.
    bridge_republish_after_s: float | None = Field(
        None, gt=0, validation_alias=_env("BRIDGE_REPUBLISH_AFTER_SECONDS")
    )
    # A task republished this many times that still ends with no outcome fails outside its
    # processor every time (a result that cannot be written, a crash in the task wrapper), not
    # by bad luck: the bridge writes its failure payload (RepublishLimitExceeded) instead of
    # republishing it forever. Three losses in a row to killed workers are already rare.
    bridge_max_republishes: int = Field(3, ge=0, validation_alias=_env("BRIDGE_MAX_REPUBLISHES"))
    counter_app_base_url: str | None = Field(None, validation_alias=_env("COUNTER_APP_BASE_URL"))

    # --- emulators/ ------------------------------------------------------------------------------
    emulator_host: str = Field("127.0.0.1", validation_alias=_env("EMULATOR_HOST"))
    emulator_port: int = Field(
        DEFAULT_EMULATOR_PORT, ge=1, le=65535, validation_alias=_env("EMULATOR_PORT")
    )
    # Unset: any non-empty key is accepted (dev).
    emulator_api_key: SecretStr | None = Field(None, validation_alias=_env("EMULATOR_API_KEY"))
    # JSON file {"deployment": {"tpm": ..., "rpm": ...}}; unset: the quotas above per deployment.
    emulator_limits_file: str | None = Field(None, validation_alias=_env("EMULATOR_LIMITS_FILE"))
    # Azure's token window is 60 s (requests: a sixth of it); benchmarks shorten both together.
    emulator_window_s: float = Field(
        60.0, gt=0, le=3600, validation_alias=_env("EMULATOR_WINDOW_SECONDS")
    )
    # Simulated model speed; 0 in tests. Per-token latency applies to completion tokens.
    emulator_first_token_ms: float = Field(
        0.0, ge=0, validation_alias=_env("EMULATOR_FIRST_TOKEN_MS")
    )
    emulator_token_ms: float = Field(0.0, ge=0, validation_alias=_env("EMULATOR_TOKEN_MS"))
    # Faults: this fraction of admitted requests fails with EMULATOR_ERROR_STATUS (500 or 503) ...
    emulator_error_rate: float = Field(
        0.0, ge=0, le=1, validation_alias=_env("EMULATOR_ERROR_RATE")
    )
    emulator_error_status: Literal[500, 503] = Field(
        503, validation_alias=_env("EMULATOR_ERROR_STATUS")
    )
    # ... and this fraction hangs for EMULATOR_STALL_SECONDS, longer than any client timeout.
    emulator_stall_rate: float = Field(
        0.0, ge=0, le=1, validation_alias=_env("EMULATOR_STALL_RATE")
    )
    emulator_stall_s: float = Field(600.0, ge=0, validation_alias=_env("EMULATOR_STALL_SECONDS"))
    # Phrases (one a line) speech recognition prefers; unset: emulators/phrases.txt.
    emulator_stt_phrases_file: str | None = Field(
        None, validation_alias=_env("EMULATOR_STT_PHRASES_FILE")
    )

    # --- web/ ------------------------------------------------------------------------------------
    web_host: str = Field("127.0.0.1", validation_alias=_env("WEB_HOST"))
    web_port: int = Field(8000, ge=1, le=65535, validation_alias=_env("WEB_PORT", "PORT"))
    # Processes per server (gunicorn reads it itself; the counter server from here).
    web_concurrency: int = Field(1, ge=1, le=64, validation_alias=_env("WEB_CONCURRENCY"))
    # The older counter's /lock, /report, /release and /status on a lean server of their own
    # (web/counter_server.py): the port callers of the older counter point COUNTER_APP_BASE_URL at.
    counter_port: int = Field(8001, ge=1, le=65535, validation_alias=_env("COUNTER_PORT"))
    # Explicit and loud: only `make run` should set this. Every endpoint but / and /health is open.
    auth_disabled: bool = Field(False, validation_alias=_env("AUTH_DISABLED"))
    auth_api_key: SecretStr | None = Field(None, validation_alias=_env("AUTH_API_KEY"))
    auth_jwks_url: str | None = Field(None, validation_alias=_env("AUTH_JWKS_URL"))
    auth_issuer: str | None = Field(None, validation_alias=_env("AUTH_ISSUER"))
    auth_audiences: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("AUTH_AUDIENCES")
    )
    auth_required_client_id: str | None = Field(
        None, validation_alias=_env("AUTH_REQUIRED_CLIENT_ID")
    )
    flower_port: int = Field(5555, ge=1, le=65535, validation_alias=_env("FLOWER_PORT"))
    # "user:password"; Flower refuses to start without it outside dev.
    flower_basic_auth: SecretStr | None = Field(None, validation_alias=_env("FLOWER_BASIC_AUTH"))

    # --- validators ------------------------------------------------------------------------------
    @field_validator("routes", mode="before")
    @classmethod
    def _parse_routes(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip()
        items = json.loads(text) if text.startswith("[") else text.split(",")
        return [Route.parse(item) if isinstance(item, str) else item for item in items if item]

    @field_validator(
        "openai_deployments", "embedding_deployments", "whisper_deployments", mode="before"
    )
    @classmethod
    def _parse_deployments(cls, value: object) -> object:
        return _parse_deployments(value)

    @field_validator("quota_app_shares", mode="before")
    @classmethod
    def _parse_shares(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                return json.loads(text)
            shares: dict[str, str] = {}
            for item in filter(None, (part.strip() for part in text.split(","))):
                app, equals, fraction = item.partition("=")
                if not equals or not app.strip():
                    raise ValueError(f"share {item!r} must look like app=fraction (feedback=0.5)")
                shares[app.strip()] = fraction.strip()
            return shares
        return value

    @field_validator("quota_app_shares")
    @classmethod
    def _shares_are_fractions(cls, value: dict[str, float]) -> dict[str, float]:
        for app, fraction in value.items():
            if not 0 < fraction <= 1:
                raise ValueError(f"the share of {app!r} must be above 0 and at most 1")
        return value

    @field_validator("auth_audiences", mode="before")
    @classmethod
    def _parse_audiences(cls, value: object) -> object:
        return string_list(value)

    @model_validator(mode="after")
    def _visibility_outlasts_tasks(self) -> Settings:
        if self.broker_visibility_timeout_s is None:
            self.broker_visibility_timeout_s = self.task_time_limit_s + 300
        elif self.broker_visibility_timeout_s <= self.task_time_limit_s:
            raise ValueError(
                "BROKER_VISIBILITY_TIMEOUT_SECONDS must exceed TASK_TIME_LIMIT_SECONDS "
                f"({self.task_time_limit_s})"
            )
        return self

    @model_validator(mode="after")
    def _legacy_single_route(self) -> Settings:
        if self.service_in_queue and self.service_out_queue:
            legacy = Route(
                in_queue=self.service_in_queue,
                processor=self.service_processor,
                out_queue=self.service_out_queue,
            )
            if all(route.in_queue != legacy.in_queue for route in self.routes):
                self.routes.append(legacy)
        return self

    # --- derived values --------------------------------------------------------------------------
    @property
    def broker_url(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def state_url(self) -> str:
        """Where Conduit's own state lives: STATE_REDIS_URL, else the broker's Redis."""
        return self.state_redis_url or self.broker_url

    @property
    def emulator_url(self) -> str:
        return f"http://{self.emulator_host}:{self.emulator_port}"

    @property
    def embedded_openai(self) -> bool:
        """True when no Azure OpenAI endpoint is configured and the emulator stands in."""
        return self.openai_api_base is None

    @property
    def uses_local_bus(self) -> bool:
        return not (self.service_bus_namespace or self.service_bus_connection_string)

    @property
    def redis_fsync_policy(self) -> AppendFsync:
        """REDIS_APPENDFSYNC with "auto" resolved: what the embedded Redis is started with."""
        if self.redis_appendfsync == "auto":
            return "everysec" if self.uses_local_bus else "always"
        return self.redis_appendfsync

    def pools(self) -> list[Pool]:
        """The three quota pools, each bound to its configured model and its deployments."""
        return [
            Pool(
                name="completion",
                deployment=self.openai_engine,
                tpm=self.tpm_quota,
                rpm=self.rpm_quota,
                deployments=self.openai_deployments or [],
            ),
            Pool(
                name="embedding",
                deployment=self.embedding_engine,
                tpm=self.embedding_tpm_quota,
                rpm=self.embedding_rpm_quota,
                deployments=self.embedding_deployments or [],
            ),
            Pool(
                name="whisper",
                deployment=self.whisper_engine,
                tpm=0,
                rpm=self.whisper_rpm_quota,
                deployments=[
                    deployment.model_copy(update={"tpm": 0})
                    for deployment in self.whisper_deployments or []
                ],
            ),
        ]


def _explain(error: ValidationError) -> str:
    """One line naming the environment variable at fault and what it expected."""
    first = error.errors()[0]
    field_name = str(first["loc"][0]) if first["loc"] else ""
    field = Settings.model_fields.get(field_name)
    alias = field.validation_alias if field else None
    names = alias.choices if isinstance(alias, AliasChoices) else [field_name]
    variable = str(names[0]).upper()
    value = first.get("input")
    shown = "<secret>" if field and "SecretStr" in str(field.annotation) else repr(value)
    return f"{variable}={shown} is not valid: {first['msg']}"


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment (and overrides), or raise one clear SettingsError.
    ``overrides`` are field names and values of any type: pydantic checks them as it checks
    the environment's strings."""
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        raise SettingsError(_explain(error)) from None
    if settings.counter_app_base_url:
        logging.getLogger("conduit.settings").warning(
            "COUNTER_APP_BASE_URL is deprecated and ignored: quota now lives in Redis (quota/)."
        )
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide Settings, read once. Tests call ``get_settings.cache_clear()``."""
    return load_settings()


def settings_or_exit(program: str) -> Settings:
    """:func:`get_settings` for a process's entry point: a wrong setting ends the process with
    the one line naming it (``program: APP_TPM_QUOTA='lots' is not valid: ...``) on stderr and
    exit status 1, not a traceback with that line at the bottom."""
    try:
        return get_settings()
    except SettingsError as error:
        sys.exit(f"{program}: {error}")
