"""The limiter's protocol without I/O: validation, key names, script arguments, reply parsing.

Imports no redis (STYLE.md: code that does no I/O lives apart from code that does), so the sync
and asyncio limiters share every rule here and differ only in how they send a :class:`Call`:

    call = protocol.acquire("completion", "gpt-4o", 1200, "feedback")
    reply = client.evalsha(sha_of(call.script), len(call.keys), *call.keys, *call.args)
    decision, server_time_us = call.parse(reply)

Bad input raises :class:`QuotaError` here, before anything reaches Redis, so state is unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, NamedTuple, TypeVar

from quota.errors import QuotaError
from quota.scripts import ScriptName
from settings import Settings

PoolName = Literal["completion", "embedding", "whisper"]
ChargeModel = Literal["azure", "usage"]

POOLS: tuple[PoolName, ...] = ("completion", "embedding", "whisper")
DEFAULT_PREFIX = "conduit:quota"
# The window is kept in this many buckets: one bucket (1 s of a 60 s window) is how late capacity
# may come back, and how many Redis commands a refusal's retry time costs.
WINDOW_BUCKETS = 60
# Azure enforces RPM/6 per 10 s, a sixth of the minute.
SUB_WINDOW_BUCKETS = WINDOW_BUCKETS // 6
# Far above any model's context: a larger count is a bug in the caller, not a request.
MAX_TOKENS = 10_000_000

_DEPLOYMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_APP_ID = re.compile(r"[A-Za-z0-9_.@/-]{1,100}")
_REQUEST_ID = re.compile(r"(?P<pool>[a-z]+)/(?P<deployment>[^/:]+)/t(?P<seq>\d+):r(?P=seq)")
_BUCKET_FIELD = re.compile(r"(?P<bucket>\d+):(?P<kind>[tr])(?::(?P<app>.+))?")
_OPEN_BUCKET = re.compile(r"([^ ;]+) (-?\d+) (-?\d+)")

T = TypeVar("T")


class Decision(NamedTuple):
    """What ``acquire`` answers. ``retry_after_s`` is None when the request can never fit."""

    allowed: bool
    request_id: str | None
    retry_after_s: float | None
    reason: str | None


class Settlement(NamedTuple):
    """What ``report`` or ``release`` changed: tokens charged beyond the lock, tokens refunded."""

    charged_tokens: int
    refunded_tokens: int


class ExternalUsage(NamedTuple):
    """Usage upstream counted that we had not: charged now, as app ``(external)``."""

    tokens: int
    requests: int


class AppUsage(NamedTuple):
    tokens: int
    requests: int


class QuotaStatus(NamedTuple):
    """One pool+deployment now. ``used`` excludes ``locked``; both count toward the limit."""

    pool: str
    deployment: str
    tpm: int
    rpm: int
    available_tokens: int
    used_tokens: int
    locked_tokens: int
    available_requests: int
    used_requests: int
    locked_requests: int
    reset_time_seconds: float  # until the oldest charge in the window leaves it
    apps: dict[str, AppUsage]

    def as_dict(self) -> dict[str, Any]:
        """The older counter's ``GET /status`` fields, plus pool, limits and the per-app split."""
        fields = self._asdict()
        fields["apps"] = {app: usage._asdict() for app, usage in self.apps.items()}
        return fields


@dataclass(frozen=True)
class Call(Generic[T]):
    """One script invocation: which script (quota.scripts), its keys and arguments, and how to
    read its reply."""

    script: ScriptName
    keys: tuple[str, ...]
    args: tuple[str | int, ...]
    parse: Callable[[Any], T]


class RequestRef(NamedTuple):
    pool: PoolName
    deployment: str
    lock_id: str


def check_pool(pool: str) -> PoolName:
    if pool not in POOLS:
        raise QuotaError(f"unknown quota pool {pool!r}: use one of {', '.join(POOLS)}")
    return pool  # type: ignore[return-value]


def check_deployment(deployment: str) -> str:
    if not isinstance(deployment, str) or not _DEPLOYMENT.fullmatch(deployment):
        raise QuotaError(
            f"deployment {deployment!r} is not an Azure OpenAI deployment name "
            "(1-64 letters, digits, '.', '_' or '-')"
        )
    return deployment


def check_app_id(app_id: str) -> str:
    if not isinstance(app_id, str) or not _APP_ID.fullmatch(app_id):
        raise QuotaError(f"app_id {app_id!r} must be 1-100 letters, digits or . _ - @ /")
    return app_id


def check_count(name: str, value: object, maximum: int = MAX_TOKENS) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise QuotaError(f"{name} must be a whole number from 0 to {maximum}, got {value!r}")
    return value


def check_limit(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise QuotaError(f"{name} must be a whole number of at least 1, got {value!r}")
    return value


def format_request_id(pool: str, deployment: str, lock_id: int | str) -> str:
    """The older ``"token_id:rate_id"`` shape; both halves name the same lock."""
    return f"{pool}/{deployment}/t{lock_id}:r{lock_id}"


def parse_request_id(request_id: object) -> RequestRef:
    match = _REQUEST_ID.fullmatch(request_id) if isinstance(request_id, str) else None
    if not match or match["pool"] not in POOLS:
        raise QuotaError(
            f"request_id {request_id!r} is not one acquire() returned "
            "(expected pool/deployment/t<n>:r<n>)"
        )
    return RequestRef(match["pool"], match["deployment"], match["seq"])  # type: ignore[arg-type]


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class QuotaProtocol:
    """Builds every limiter call for one configuration (window, limits, charge models)."""

    def __init__(
        self,
        settings: Settings,
        *,
        window_s: float | None = None,
        prefix: str = DEFAULT_PREFIX,
        charge_models: Mapping[str, ChargeModel] | None = None,
    ) -> None:
        self.window_s = float(window_s if window_s is not None else settings.quota_window_s)
        if not self.window_s > 0:
            raise QuotaError(f"window_s must be positive, got {window_s!r}")
        # Rounded up: a window a few µs longer than asked is safe, a shorter one is not.
        self.bucket_us = math.ceil(self.window_s * 1_000_000 / WINDOW_BUCKETS)
        # How many buckets a charge stays counted past the window (QUOTA_UPSTREAM_MARGIN_SECONDS),
        # rounded up for the same reason.
        margin_us = round(settings.quota_upstream_margin_s * 1_000_000)
        self.margin_buckets = math.ceil(margin_us / self.bucket_us)
        self.lock_ttl_s = settings.quota_lock_ttl_s
        self.prefix = prefix
        self.defaults = {pool.name: pool for pool in settings.pools()}
        self.charge_models = {pool: settings.quota_charge_model for pool in POOLS}
        self.charge_models.update(charge_models or {})
        self.registry_key = f"{prefix}:deployments"
        # The scripts' constant settings as one argument, and each pool's default limits as
        # another: every argument costs the client time to encode and the script time to convert.
        self._layout_arg = (
            f"{self.bucket_us} {WINDOW_BUCKETS} {SUB_WINDOW_BUCKETS} "
            f"{self.margin_buckets} {self.lock_ttl_s * 1_000_000}"
        )
        self._limits_arg = {pool.name: f"{pool.tpm} {pool.rpm}" for pool in settings.pools()}

    # --- keys ------------------------------------------------------------------------------------
    def keys(self, pool: str, deployment: str) -> tuple[str, str, str]:
        """state, locks, expiry: one hash tag per pool+deployment (Redis Cluster)."""
        base = f"{self.prefix}:{{{pool}:{deployment}}}"
        return f"{base}:state", f"{base}:locks", f"{base}:expiry"

    def limits_key(self, pool: str, deployment: str) -> str:
        """Limits live in the state hash, so a decision reads them in the same command."""
        return self.keys(check_pool(pool), check_deployment(deployment))[0]

    def registry_member(self, pool: str, deployment: str) -> str:
        return f"{pool}:{deployment}"

    def known_deployments(self, members: Sequence[bytes | str]) -> list[tuple[str, str]]:
        """Every pool+deployment in settings or seen in Redis, in a stable order."""
        known = {(pool.name, pool.deployment) for pool in self.defaults.values()}
        for member in members:
            pool, _, deployment = _text(member).partition(":")
            known.add((pool, deployment))
        return sorted(known)

    def limits_mapping(self, pool: str, tpm: int | None, rpm: int | None) -> dict[str, int]:
        """The fields ``set_limits`` writes; the script reads them on every decision."""
        check_pool(pool)
        if tpm is None and rpm is None:
            raise QuotaError("set_limits needs tpm, rpm or both")
        if pool == "whisper" and tpm is not None:
            raise QuotaError("the whisper pool is limited by requests only: pass rpm, not tpm")
        limits = {}
        if tpm is not None:
            limits["tpm"] = check_limit("tpm", tpm)
        if rpm is not None:
            limits["rpm"] = check_limit("rpm", rpm)
        return limits

    # --- calls -----------------------------------------------------------------------------------
    def _call(
        self,
        script: ScriptName,
        pool: str,
        deployment: str,
        *extra: str | int,
        parse: Callable[[Any], T],
    ) -> Call[T]:
        args = (self._layout_arg, self._limits_arg[check_pool(pool)], *extra)
        return Call(script, self.keys(pool, check_deployment(deployment)), args, parse)

    def acquire(
        self, pool: str, deployment: str, tokens: int, app_id: str
    ) -> Call[tuple[Decision, int]]:
        check_count("tokens", tokens)

        def parse(reply: Sequence[Any]) -> tuple[Decision, int]:
            return self._decision(pool, deployment, tokens, reply), int(reply[0])

        return self._call("acquire", pool, deployment, tokens, check_app_id(app_id), parse=parse)

    def report(
        self, request_id: str, prompt_tokens: int, completion_tokens: int, pool: str | None = None
    ) -> Call[Settlement]:
        ref = self._ref(request_id, pool)
        actual = check_count("prompt_tokens", prompt_tokens) + check_count(
            "completion_tokens", completion_tokens
        )
        return self._call(
            "settle",
            ref.pool,
            ref.deployment,
            "report",
            ref.lock_id,
            actual,
            self.charge_models[ref.pool],
            parse=self._settlement(request_id),
        )

    def release(self, request_id: str, pool: str | None = None) -> Call[Settlement]:
        ref = self._ref(request_id, pool)
        return self._call(
            "settle",
            ref.pool,
            ref.deployment,
            "release",
            ref.lock_id,
            parse=self._settlement(request_id),
        )

    def observe(
        self,
        pool: str,
        deployment: str,
        remaining_tokens: int | None,
        remaining_requests: int | None,
    ) -> Call[ExternalUsage]:
        unknown = -1  # the script's word for "upstream did not say"
        tokens = (
            unknown
            if remaining_tokens is None
            else check_count("remaining_tokens", remaining_tokens, maximum=10**12)
        )
        requests = (
            unknown
            if remaining_requests is None
            else check_count("remaining_requests", remaining_requests, maximum=10**9)
        )
        return self._call(
            "observe",
            pool,
            deployment,
            tokens,
            requests,
            parse=lambda reply: ExternalUsage(int(reply[2]), int(reply[3])),
        )

    def status(self, pool: str, deployment: str) -> Call[QuotaStatus]:
        return self._call(
            "status", pool, deployment, parse=lambda reply: self._status(pool, deployment, reply)
        )

    # --- replies ---------------------------------------------------------------------------------
    def _ref(self, request_id: str, pool: str | None) -> RequestRef:
        ref = parse_request_id(request_id)
        if pool is not None and ref.pool != pool:
            raise QuotaError(
                f"request_id {request_id!r} belongs to the {ref.pool} pool, not {pool}"
            )
        return ref

    def _settlement(self, request_id: str) -> Callable[[Sequence[Any]], Settlement]:
        def parse(reply: Sequence[Any]) -> Settlement:
            if int(reply[1]) == 1:
                return Settlement(int(reply[2]), int(reply[3]))
            why = {
                "done": "was already reported or released: settle each lock once",
                "expired": f"expired: it was not reported within {self.lock_ttl_s} s "
                "(QUOTA_LOCK_TTL_SECONDS) and stays spent",
                "unknown": "is unknown here: never issued by this Redis, or finished long ago",
            }[_text(reply[2])]
            raise QuotaError(f"request_id {request_id!r} {why}")

        return parse

    def _decision(self, pool: str, deployment: str, tokens: int, reply: Sequence[Any]) -> Decision:
        if int(reply[1]) == 1:
            return Decision(True, format_request_id(pool, deployment, _text(reply[2])), 0.0, None)
        retry_us, kind, used, limit = int(reply[2]), _text(reply[3]), int(reply[4]), int(reply[5])
        window = f"{self.window_s:g} s"
        if kind == "too_large":
            reason = (
                f"Token limit would be exceeded: {tokens} tokens is more than the whole "
                f"limit of {limit} per {window}; split the request or raise the limit"
            )
            return Decision(False, None, None, reason)
        retry_after_s = retry_us / 1e6
        retry = f"retry in {retry_after_s:.2f} s"
        if kind == "tokens":
            reason = (
                f"Token limit would be exceeded: {tokens} tokens requested, "
                f"{max(0, limit - used)} of {limit} available in the last {window}; {retry}"
            )
        else:
            span = window if kind == "requests" else f"{self.window_s / 6:g} s"
            prefix = (
                "Whisper rate limit exceeded"
                if pool == "whisper"
                else "API Rate limit would be exceeded"
            )
            reason = f"{prefix}: {used} of {limit} requests in the last {span}; {retry}"
        return Decision(False, None, retry_after_s, reason)

    def _status(self, pool: str, deployment: str, reply: Sequence[Any]) -> QuotaStatus:
        (
            now_us,
            tpm,
            rpm,
            sub_rpm,
            tokens,
            requests,
            sub_requests,
            locked_tokens,
            locked_requests,
            open_bucket,
        ) = (int(value) for value in reply[:10])
        # (bucket, "t" or "r", app, count): the open bucket's, then the closed buckets' fields.
        counts: list[tuple[int, str, str, int]] = []
        for app, app_tokens, app_requests in _OPEN_BUCKET.findall(_text(reply[10])):
            counts += [
                (open_bucket, "t", app, int(app_tokens)),
                (open_bucket, "r", app, int(app_requests)),
            ]
        flat = [_text(value) for value in reply[11]]
        for name, value in zip(flat[::2], flat[1::2], strict=True):
            match = _BUCKET_FIELD.fullmatch(name)
            if match and match["app"]:
                counts.append((int(match["bucket"]), match["kind"], match["app"], int(value)))
        apps: dict[str, list[int]] = {}
        for _bucket, kind, app, count in counts:
            apps.setdefault(app, [0, 0])[0 if kind == "t" else 1] += count
        oldest = min((bucket for bucket, _kind, _app, count in counts if count), default=None)
        # The oldest bucket stops counting when the window and the margin have passed it.
        span = WINDOW_BUCKETS + self.margin_buckets
        reset_us = 0 if oldest is None else (oldest + span + 1) * self.bucket_us - now_us
        # Locks older than the window are no longer in it; the split must still add up.
        shown_locked_tokens = min(locked_tokens, tokens)
        shown_locked_requests = min(locked_requests, requests)
        return QuotaStatus(
            pool=pool,
            deployment=deployment,
            tpm=tpm,
            rpm=rpm,
            available_tokens=max(0, tpm - tokens) if tpm > 0 else 0,
            used_tokens=tokens - shown_locked_tokens,
            locked_tokens=shown_locked_tokens,
            available_requests=max(0, min(rpm - requests, sub_rpm - sub_requests)),
            used_requests=requests - shown_locked_requests,
            locked_requests=shown_locked_requests,
            reset_time_seconds=max(0, reset_us) / 1e6,
            apps={app: AppUsage(*usage) for app, usage in sorted(apps.items()) if any(usage)},
        )
