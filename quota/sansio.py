"""The limiter's protocol without I/O: validation, key names, script arguments, reply parsing.

Imports no redis (docs/architecture.md, Conventions: code that does no I/O lives apart from code
that does), so the sync and asyncio limiters share every rule here and differ only in how they
send a :class:`Call`:

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
from typing import TYPE_CHECKING, Any, Generic, Literal, NamedTuple, TypeVar

from quota.errors import QuotaError, StaleLock
from settings import Deployment, Pool, PoolName, Settings

if TYPE_CHECKING:  # a name only: quota.scripts imports redis, which this module must not
    from quota.scripts import ScriptName

ChargeModel = Literal["azure", "usage"]
# interactive: voice turns and user-facing calls, which may use the reserve; batch: the rest.
Lane = Literal["interactive", "batch"]
LANES: tuple[Lane, ...] = ("interactive", "batch")

POOLS: tuple[PoolName, ...] = ("completion", "embedding", "whisper")
DEFAULT_PREFIX = "conduit:quota"
# Azure enforces RPM/6 per 10 s, a sixth of the minute: the sub-window is a sixth of the
# window's buckets (QUOTA_WINDOW_BUCKETS, a multiple of 6).
SUB_WINDOW_FRACTION = 6
# Far above any model's context: a larger count is a bug in the caller, not a request.
MAX_TOKENS = 10_000_000

_DEPLOYMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_APP_ID = re.compile(r"[A-Za-z0-9_.@/-]{1,100}")
# pool/deployment/t<n>:r<n>, or pool/model/deployment/... for a deployment of a spill-over model;
# <n> is "<lease>.<grant>" for a lock granted from a lease (quota/leases.py)
_REQUEST_ID = re.compile(
    r"(?P<pool>[a-z]+)/(?:(?P<model>[^/:]+)/)?(?P<deployment>[^/:]+)"
    r"/t(?P<seq>\d+(?:\.\d+)?):r(?P=seq)"
)
# The suffix an app's interactive charges are booked under (app ids cannot contain "!").
INTERACTIVE_MARK = "!i"
# Deployment names whose acquire arguments are kept built (a fleet has a handful).
MAX_CACHED_NAMES = 1024
# The most requests one lease may ask for (acquire.lua grants at most an eighth of the room left).
MAX_LEASE_REQUESTS = 10_000
# Fractions travel to the script as parts per million, so it computes in whole numbers.
PPM = 1_000_000
_BUCKET_FIELD = re.compile(r"(?P<bucket>\d+):(?P<kind>[tr])(?::(?P<app>.+))?")
_OPEN_BUCKET = re.compile(r"([^ ;]+) (-?\d+) (-?\d+)")

T = TypeVar("T")


class Decision(NamedTuple):
    """What ``acquire`` answers. ``retry_after_s`` is None when the request can never fit.

    ``deployment`` is where the request must go: the deployment of the model that took the
    charge (or, refused, the one that clears soonest)."""

    allowed: bool
    request_id: str | None
    retry_after_s: float | None
    reason: str | None
    deployment: str | None = None


class SettleResult(NamedTuple):
    """One operation's result in :meth:`QuotaProtocol.settle_many`: done, or why not ("unknown",
    "done", "expired", "stale", "overdrawn"), and the tokens charged beyond the lock or refunded."""

    done: bool
    why: str
    charged_tokens: int
    refunded_tokens: int


class LeaseGrant(NamedTuple):
    """Room granted beside an acquire for its process to grant from (quota/leases.py): a lock of
    ``requests`` requests and ``tokens`` tokens on ``deployment``, charged at ``stamped_us``
    (server time), expiring with the lock it came with."""

    pool: str
    model: str
    deployment: str
    lease_id: str
    requests: int
    tokens: int
    stamped_us: int


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
    """One pool+deployment now. ``used`` excludes ``locked``; both count toward the limit.

    ``lanes`` splits what the window holds between the interactive and batch lanes;
    ``limits_from`` is "runtime" while set_limits values apply, else "settings";
    ``cooldown_s`` how long the deployment is still skipped after a 429 or 5xx."""

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
    lanes: dict[str, AppUsage] = {}  # noqa: RUF012 - a NamedTuple default, never mutated
    model: str = ""
    limits_from: Literal["settings", "runtime"] = "settings"
    cooldown_s: float = 0.0
    reserve_active: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The older counter's ``GET /status`` fields, plus pool, limits, the per-app and per-lane
        split, where the limits come from and any cool-down."""
        fields = self._asdict()
        fields["apps"] = {app: usage._asdict() for app, usage in self.apps.items()}
        fields["lanes"] = {lane: usage._asdict() for lane, usage in self.lanes.items()}
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
    model: str
    deployment: str
    lock_id: str


def check_pool(pool: str) -> PoolName:
    if pool not in POOLS:
        raise QuotaError(f"unknown quota pool {pool!r}: use one of {', '.join(POOLS)}")
    return pool


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


def usage_tokens(prompt_tokens: object, completion_tokens: object) -> int:
    """The tokens a report charges, each count checked."""
    return check_count("prompt_tokens", prompt_tokens) + check_count(
        "completion_tokens", completion_tokens
    )


def release_operation(lock_id: str) -> str:
    """settle.lua's operation giving back lock ``lock_id`` (a lease: the room it still holds)."""
    return f"release {lock_id}"


def carve_operation(lease_id: str, grant: int, tokens: int) -> str:
    """settle.lua's operation making grant ``grant`` of a lease a lock of its own."""
    return f"carve {lease_id} {grant} {tokens}"


def settled_operation(
    lease_id: str,
    *,
    requests: int,
    tokens: int,
    extra: int,
    refund_tokens: int,
    refund_requests: int,
) -> str:
    """settle.lua's operation booking grants of a lease settled before they were carved."""
    return f"settled {lease_id} {requests} {tokens} {extra} {refund_tokens} {refund_requests}"


def check_lane(lane: str) -> Lane:
    if lane not in LANES:
        raise QuotaError(f"lane {lane!r} must be one of {', '.join(LANES)}")
    return lane


def format_request_id(pool: str, model: str, deployment: str, lock_id: int | str) -> str:
    """The older ``"token_id:rate_id"`` shape; both halves name the same lock. A deployment of a
    spill-over model carries the model too, whose hash tag its keys are under."""
    where = deployment if model == deployment else f"{model}/{deployment}"
    return f"{pool}/{where}/t{lock_id}:r{lock_id}"


def parse_request_id(request_id: object) -> RequestRef:
    match = _REQUEST_ID.fullmatch(request_id) if isinstance(request_id, str) else None
    if not match or match["pool"] not in POOLS:
        raise QuotaError(
            f"request_id {request_id!r} is not one acquire() returned "
            "(expected pool/deployment/t<n>:r<n>)"
        )
    deployment = match["deployment"]
    model = match["model"] or deployment
    return RequestRef(match["pool"], model, deployment, match["seq"])


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _settle_result(result: Sequence[Any]) -> SettleResult:
    """One of settle.lua's results: {1, charged, refunded} or {0, why}."""
    if int(result[0]) == 1:
        return SettleResult(True, "", int(result[1]), int(result[2]))
    return SettleResult(False, _text(result[1]), 0, 0)


class Target(NamedTuple):
    """What a name a caller passes resolves to: the model whose hash tag the keys are under, and
    the deployments an acquire may choose from, in spill-over order, with their default limits."""

    model: str
    deployments: tuple[Deployment, ...]


class QuotaProtocol:
    """Builds every limiter call for one configuration (window, limits, lanes, shares, models)."""

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
        # The window is kept in this many buckets: a bucket is how late capacity may come back,
        # and how many Redis commands a refusal's retry time costs.
        self.window_buckets = settings.quota_window_buckets  # a multiple of 6 (settings check)
        # Rounded up: a window a few µs longer than asked is safe, a shorter one is not.
        self.bucket_us = math.ceil(self.window_s * 1_000_000 / self.window_buckets)
        # How many buckets a charge stays counted past the window (QUOTA_UPSTREAM_MARGIN_SECONDS),
        # rounded up for the same reason.
        margin_us = round(settings.quota_upstream_margin_s * 1_000_000)
        self.margin_buckets = math.ceil(margin_us / self.bucket_us)
        self.margin_s = self.margin_buckets * self.bucket_us / 1e6
        # The margin covers the time from the stamp to the upstream's count in two halves: a send
        # later than the first half is restamped when it leaves (tasks/upstream.py), so the path
        # to the wire never takes more than half; the other half is for the wire and the
        # upstream's own work before it counts the request.
        self.restamp_after_s = self.margin_s / 2
        self.lock_ttl_s = settings.quota_lock_ttl_s
        self.prefix = prefix
        self.defaults: dict[str, Pool] = {pool.name: pool for pool in settings.pools()}
        self.charge_models: dict[str, ChargeModel] = {
            pool: settings.quota_charge_model for pool in POOLS
        }
        self.charge_models.update(charge_models or {})
        self.registry_key = f"{prefix}:deployments"
        self.interactive_idle_s = settings.quota_interactive_idle_s
        self.cooldown_s = settings.quota_cooldown_s
        self.error_cooldown_s = settings.quota_error_cooldown_s
        self.shares = dict(settings.quota_app_shares)
        # The scripts' constant settings as one argument: every argument costs the client time to
        # encode and the script time to convert.
        self._layout_arg = (
            f"{self.bucket_us} {self.window_buckets} "
            f"{self.window_buckets // SUB_WINDOW_FRACTION} "
            f"{self.margin_buckets} {self.lock_ttl_s * 1_000_000}"
        )
        self._reserve_ppm = round(settings.quota_interactive_reserve * PPM)
        self._idle_us = round(settings.quota_interactive_idle_s * 1_000_000)
        # Per (pool, name): what every acquire of it sends (see _acquire_parts).
        self._parts: dict[tuple[str, str], tuple[Target, tuple[str, ...], tuple[str, ...]]] = {}
        # Each pool's model, and each of its deployments on its own (a caller naming one
        # deployment of a model is held to that deployment, counted under the model's keys).
        self._targets: dict[tuple[str, str], Target] = {}
        for pool in settings.pools():
            self._targets[pool.name, pool.deployment] = Target(
                pool.deployment, tuple(pool.deployments)
            )
            for deployment in pool.deployments:
                if deployment.name != pool.deployment:
                    self._targets[pool.name, deployment.name] = Target(
                        pool.deployment, (deployment,)
                    )

    # --- names -----------------------------------------------------------------------------------
    def target(self, pool: str, name: str) -> Target:
        """The model and deployments ``name`` (a model or one deployment) stands for; a name not
        in settings is a deployment of its own with the pool's limits."""
        check_pool(pool)
        known = self._targets.get((pool, check_deployment(name)))
        if known is not None:
            return known
        defaults = self.defaults[pool]
        return Target(name, (Deployment(name=name, tpm=defaults.tpm, rpm=defaults.rpm),))

    def deployment(self, pool: str, name: str) -> Deployment:
        """The settings of one deployment (its endpoint, key and default limits)."""
        target = self.target(pool, name)
        for deployment in target.deployments:
            if deployment.name == name:
                return deployment
        raise QuotaError(
            f"{pool} model {name!r} has {len(target.deployments)} deployments: name one of "
            f"{', '.join(deployment.name for deployment in target.deployments)}"
        )

    def deployments_of(self, pool: str, name: str) -> list[str]:
        return [deployment.name for deployment in self.target(pool, name).deployments]

    # --- keys ------------------------------------------------------------------------------------
    def keys(self, pool: str, model: str, deployment: str | None = None) -> tuple[str, str, str]:
        """state, locks, expiry of one deployment, under one hash tag per pool+model, so a script
        weighing all of a model's deployments stays in one Redis Cluster slot. A deployment named
        like its model keeps the keys it had before spill-over existed."""
        base = f"{self.prefix}:{{{pool}:{model}}}"
        if deployment is not None and deployment != model:
            base = f"{base}:{deployment}"
        return f"{base}:state", f"{base}:locks", f"{base}:expiry"

    def deployment_keys(self, pool: str, deployment: str) -> tuple[str, str, str]:
        target = self.target(pool, deployment)
        return self.keys(pool, target.model, self.deployment(pool, deployment).name)

    def limits_key(self, pool: str, deployment: str) -> str:
        """Limits live in the state hash, so a decision reads them in the same command."""
        return self.deployment_keys(pool, deployment)[0]

    def registry_member(self, pool: str, deployment: str) -> str:
        return f"{pool}:{deployment}"

    def known_deployments(self, members: Sequence[bytes | str]) -> list[tuple[str, str]]:
        """Every pool+deployment in settings or seen in Redis, in a stable order."""
        known: set[tuple[str, str]] = {
            (pool.name, deployment.name)
            for pool in self.defaults.values()
            for deployment in pool.deployments
        }
        for member in members:
            pool, _, name = _text(member).partition(":")
            # A model acquired by name stands for its deployments.
            known.update((pool, deployment) for deployment in self.deployments_of(pool, name))
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
    def _deployment_call(
        self,
        script: ScriptName,
        pool: str,
        model: str,
        deployment: Deployment,
        *extra: str | int,
        parse: Callable[[Any], T],
    ) -> Call[T]:
        args = (self._layout_arg, f"{deployment.tpm} {deployment.rpm}", *extra)
        return Call(script, self.keys(pool, model, deployment.name), args, parse)

    def _call(
        self,
        script: ScriptName,
        pool: str,
        deployment: str,
        *extra: str | int,
        parse: Callable[[Any], T],
    ) -> Call[T]:
        model = self.target(pool, deployment).model
        settings = self.deployment(pool, deployment)
        return self._deployment_call(script, pool, model, settings, *extra, parse=parse)

    def acquire(
        self, pool: str, name: str, tokens: int, app_id: str, lane: str = "batch"
    ) -> Call[tuple[Decision, int]]:
        """Weigh every deployment ``name`` stands for, in order, in one script call."""
        call = self.acquire_with_lease(pool, name, tokens, app_id, lane)

        def parse(reply: Sequence[Any]) -> tuple[Decision, int]:
            decision, now_us, _ = call.parse(reply)
            return decision, now_us

        return Call(call.script, call.keys, call.args, parse)

    def acquire_with_lease(
        self,
        pool: str,
        name: str,
        tokens: int,
        app_id: str,
        lane: str = "batch",
        *,
        lease_requests: int = 0,
        lease_tokens: int = 0,
        lease_hold_s: float = 0.0,
    ) -> Call[tuple[Decision, int, LeaseGrant | None]]:
        """``acquire``, asking also for a lease of up to ``lease_requests`` more requests and
        ``lease_tokens`` more tokens where the request lands (acquire.lua grants at most an
        eighth of the room left, and none to an app with a share), held at most
        ``lease_hold_s`` (a request refused only for the room leases hold is told to retry
        then). Parsed: the decision, the server time it was made at (µs), and the lease (None:
        none granted)."""
        check_count("tokens", tokens)
        check_app_id(app_id)
        check_count("lease_requests", lease_requests, maximum=MAX_LEASE_REQUESTS)
        check_count("lease_tokens", lease_tokens)
        interactive = check_lane(lane) == "interactive"
        target, keys, limits = self._acquire_parts(pool, name)
        share_ppm = round(self.shares.get(app_id, 0) * PPM)
        lane_arg = (
            f"{'i' if interactive else 'b'} {self._reserve_ppm} {self._idle_us} {share_ppm} "
            f"{lease_requests} {lease_tokens} {round(lease_hold_s * 1_000_000)}"
        )
        booked = app_id + INTERACTIVE_MARK if interactive else app_id

        def parse(reply: Sequence[Any]) -> tuple[Decision, int, LeaseGrant | None]:
            decision, now_us = self._decision(pool, target, app_id, tokens, reply), int(reply[0])
            lease = None
            if decision.allowed and int(reply[5]):
                assert decision.deployment is not None  # an allowed decision names it
                lease = LeaseGrant(
                    pool,
                    target.model,
                    decision.deployment,
                    _text(reply[4]),
                    int(reply[5]),
                    int(reply[6]),
                    now_us,
                )
            return decision, now_us, lease

        args: tuple[str | int, ...] = (self._layout_arg, tokens, booked, lane_arg, *limits)
        return Call("acquire", keys, args, parse)

    def _acquire_parts(
        self, pool: str, name: str
    ) -> tuple[Target, tuple[str, ...], tuple[str, ...]]:
        """The target, keys and default-limit arguments of ``name``: the same on every acquire,
        so built (and validated) once per name, not once per decision."""
        parts = self._parts.get((pool, name))
        if parts is None:
            target = self.target(pool, name)
            keys = tuple(
                key
                for deployment in target.deployments
                for key in self.keys(pool, target.model, deployment.name)
            )
            limits = tuple(f"{item.tpm} {item.rpm}" for item in target.deployments)
            if len(self._parts) >= MAX_CACHED_NAMES:  # names come from callers: stay bounded
                self._parts.clear()
            parts = self._parts[pool, name] = (target, keys, limits)
        return parts

    def report(
        self, request_id: str, prompt_tokens: int, completion_tokens: int, pool: str | None = None
    ) -> Call[Settlement]:
        ref = self.request_ref(request_id, pool)
        actual = usage_tokens(prompt_tokens, completion_tokens)
        return self._settle(ref, request_id, self.report_operation(ref, actual))

    def report_operation(self, ref: RequestRef, actual_tokens: int) -> str:
        """settle.lua's operation finishing ``ref`` with ``actual_tokens`` used."""
        return f"report {ref.lock_id} {actual_tokens} {self.charge_models[ref.pool]}"

    def release(self, request_id: str, pool: str | None = None) -> Call[Settlement]:
        ref = self.request_ref(request_id, pool)
        return self._settle(ref, request_id, release_operation(ref.lock_id))

    def reject(
        self, request_id: str, cooldown_s: float, pool: str | None = None
    ) -> Call[Settlement]:
        """The upstream refused (429) or failed (5xx) the request: keep its charge, and skip its
        deployment for ``cooldown_s`` in every process (0: no cool-down)."""
        ref = self.request_ref(request_id, pool)
        if not 0 <= cooldown_s <= 3600:
            raise QuotaError(f"cooldown_s must be from 0 to 3600 seconds, got {cooldown_s!r}")
        return self._settle(ref, request_id, f"reject {ref.lock_id} {round(cooldown_s * 1e6)}")

    def restamp(self, request_id: str, pool: str | None = None) -> Call[int]:
        """The request is sent only now: count its charge from now. Parsed: the server time (µs)
        it is counted from."""
        ref = self.request_ref(request_id, pool)
        settled = self._settlement(request_id)

        def parse(reply: Sequence[Any]) -> int:
            settled(reply[1])  # raises for an unknown, settled or expired lock
            return int(reply[0])

        deployment = self._deployment_of_ref(ref)
        return self._deployment_call(
            "settle", ref.pool, ref.model, deployment, f"restamp {ref.lock_id}", parse=parse
        )

    def _settle(self, ref: RequestRef, request_id: str, operation: str) -> Call[Settlement]:
        deployment = self._deployment_of_ref(ref)
        settled = self._settlement(request_id)
        return self._deployment_call(
            "settle",
            ref.pool,
            ref.model,
            deployment,
            operation,
            parse=lambda reply: settled(reply[1]),
        )

    def settle_many(
        self, pool: str, model: str, deployment: str, operations: Sequence[str]
    ) -> Call[list[SettleResult]]:
        """Several of settle.lua's operations on one deployment in one call (quota/leases.py
        writes its grants and their settlements behind this way); each operation's result."""
        if not operations:
            raise QuotaError("settle_many needs at least one operation")
        settings = self._deployment_of_ref(RequestRef(check_pool(pool), model, deployment, ""))

        def parse(reply: Sequence[Any]) -> list[SettleResult]:
            return [_settle_result(result) for result in reply[1:]]

        return self._deployment_call("settle", pool, model, settings, *operations, parse=parse)

    def _deployment_of_ref(self, ref: RequestRef) -> Deployment:
        check_deployment(ref.model)
        target = self.target(ref.pool, ref.model)
        for deployment in target.deployments:
            if deployment.name == ref.deployment:
                return deployment
        # Not in our settings (another process's, or settings changed): the pool's defaults.
        defaults = self.defaults[ref.pool]
        name = check_deployment(ref.deployment)
        return Deployment(name=name, tpm=defaults.tpm, rpm=defaults.rpm)

    def observe(
        self,
        pool: str,
        deployment: str,
        remaining_tokens: int | None,
        remaining_requests: int | None,
        *,
        request_id: str | None = None,
        lasts_s: float | None = None,
    ) -> Call[ExternalUsage]:
        """With ``request_id`` (the request whose answer carried the headers), our count is taken
        as it was when its charge was stamped, not as it is when the answer came back. With
        ``lasts_s`` (a 429's retry-after: when the upstream has room again), what the upstream
        counts beyond us is booked to leave our window then, not a whole window later."""
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
        lock_id = ""
        if request_id is not None:
            ref = self.request_ref(request_id, pool)
            if ref.deployment != deployment:
                raise QuotaError(f"request_id {request_id!r} is not one of {deployment!r}")
            lock_id = ref.lock_id
        return self._call(
            "observe",
            pool,
            deployment,
            tokens,
            requests,
            lock_id,
            -1 if lasts_s is None else round(min(max(lasts_s, 0.0), self.window_s) * 1e6),
            parse=lambda reply: ExternalUsage(int(reply[2]), int(reply[3])),
        )

    def status(self, pool: str, deployment: str) -> Call[QuotaStatus]:
        model = self.target(pool, deployment).model
        return self._call(
            "status",
            pool,
            deployment,
            parse=lambda reply: self._status(pool, model, deployment, reply),
        )

    # --- replies ---------------------------------------------------------------------------------
    def request_ref(self, request_id: str, pool: str | None = None) -> RequestRef:
        """What ``request_id`` names; a QuotaError when it is malformed or of another pool."""
        ref = parse_request_id(request_id)
        if pool is not None and ref.pool != pool:
            raise QuotaError(
                f"request_id {request_id!r} belongs to the {ref.pool} pool, not {pool}"
            )
        return ref

    def _settlement(self, request_id: str) -> Callable[[Sequence[Any]], Settlement]:
        def parse(result: Sequence[Any]) -> Settlement:
            return self.settled(request_id, _settle_result(result))

        return parse

    def settled(self, request_id: str, result: SettleResult) -> Settlement:
        """What a settle operation on ``request_id`` answered, as a Settlement, or the error
        saying why it changed nothing."""
        if result.done:
            return Settlement(result.charged_tokens, result.refunded_tokens)
        raise self.settle_error(request_id, result.why)

    def settle_error(self, request_id: str, why: str) -> QuotaError:
        """The error for a settle of ``request_id`` that changed nothing because ``why``
        (StaleLock for "stale")."""
        if why == "stale":
            return StaleLock(
                f"request_id {request_id!r} was not sent within the window of its lock: its "
                "charge has left the window, acquire again"
            )
        reason = {
            "done": "was already reported or released: settle each lock once",
            "expired": f"expired: it was not reported within {self.lock_ttl_s} s "
            "(QUOTA_LOCK_TTL_SECONDS) and stays spent",
            "unknown": "is unknown here: never issued by this Redis, or finished long ago",
        }.get(why, f"was refused ({why})")
        return QuotaError(f"request_id {request_id!r} {reason}")

    def _decision(
        self, pool: str, target: Target, app_id: str, tokens: int, reply: Sequence[Any]
    ) -> Decision:
        deployment = target.deployments[int(reply[3 if int(reply[1]) == 1 else 6]) - 1].name
        if int(reply[1]) == 1:
            request_id = format_request_id(pool, target.model, deployment, _text(reply[2]))
            return Decision(True, request_id, 0.0, None, deployment)
        retry_us, kind, used, limit = int(reply[2]), _text(reply[3]), int(reply[4]), int(reply[5])
        detail = _text(reply[7])
        reason = refusal_reason(
            pool,
            deployment,
            tokens,
            kind=kind,
            used=used,
            limit=limit,
            retry_us=retry_us,
            window_s=self.window_s,
            detail=detail,
            app_id=app_id,
            share=self.shares.get(app_id),
        )
        return Decision(False, None, None if retry_us < 0 else retry_us / 1e6, reason, deployment)

    def _status(self, pool: str, model: str, deployment: str, reply: Sequence[Any]) -> QuotaStatus:
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
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        for name, value in fields.items():
            match = _BUCKET_FIELD.fullmatch(name)
            if match and match["app"]:
                counts.append((int(match["bucket"]), match["kind"], match["app"], int(value)))
        apps: dict[str, list[int]] = {}
        lanes: dict[str, list[int]] = {lane: [0, 0] for lane in LANES}
        for _bucket, kind, booked, count in counts:
            index = 0 if kind == "t" else 1
            app = booked.removesuffix(INTERACTIVE_MARK)
            lane = "interactive" if app != booked else "batch"
            apps.setdefault(app, [0, 0])[index] += count
            lanes[lane][index] += count
        oldest = min((bucket for bucket, _kind, _app, count in counts if count), default=None)
        # The oldest bucket stops counting when the window and the margin have passed it.
        span = self.window_buckets + self.margin_buckets
        reset_us = 0 if oldest is None else (oldest + span + 1) * self.bucket_us - now_us
        # Locks older than the window are no longer in it; the split must still add up.
        shown_locked_tokens = min(locked_tokens, tokens)
        shown_locked_requests = min(locked_requests, requests)
        cool_us = int(fields.get("cool", 0)) - now_us
        interactive_at = int(fields.get("interactive", 0))
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
            lanes={lane: AppUsage(*usage) for lane, usage in lanes.items()},
            model=model,
            limits_from="runtime" if "tpm" in fields or "rpm" in fields else "settings",
            cooldown_s=max(0, cool_us) / 1e6,
            reserve_active=self._reserve_ppm > 0
            and interactive_at > 0
            and now_us - interactive_at < self._idle_us,
        )


def refusal_reason(
    pool: str,
    deployment: str,
    tokens: int,
    *,
    kind: str,
    used: int,
    limit: int,
    retry_us: int,
    window_s: float,
    detail: str = "",
    app_id: str = "",
    share: float | None = None,
) -> str:
    """The older counter's refusal wording, extended by why when the reason is new (a cool-down,
    the interactive reserve, an app's share). The first words stay the older ones, which callers
    match on (quota.retry.REFUSAL_PREFIXES)."""
    window = f"{window_s:g} s"
    whose = (
        f" (app {app_id!r} is held to its share {share:g} of the limits, QUOTA_APP_SHARES)"
        if detail == "share"
        else ""
    )
    if kind == "too_large":
        return (
            f"Token limit would be exceeded: {tokens} tokens is more than the whole "
            f"limit of {limit} per {window}{whose}; split the request or raise the limit"
        )
    retry = f"retry in {retry_us / 1e6:.2f} s"
    held = (
        " (the rest is kept for interactive calls, QUOTA_INTERACTIVE_RESERVE)"
        if detail == "reserve"
        else whose
    )
    if kind == "cooldown":
        return (
            f"API Rate limit would be exceeded: {pool} deployment {deployment!r} is cooling down "
            f"after the upstream refused or failed a request; {retry}"
        )
    if kind == "tokens":
        return (
            f"Token limit would be exceeded: {tokens} tokens requested, "
            f"{max(0, limit - used)} of {limit} available in the last {window}{held}; {retry}"
        )
    span = window if kind == "requests" else f"{window_s / 6:g} s"
    prefix = (
        "Whisper rate limit exceeded" if pool == "whisper" else "API Rate limit would be exceeded"
    )
    return f"{prefix}: {used} of {limit} requests in the last {span}{held}; {retry}"
