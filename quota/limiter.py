"""The quota limiter: every decision is one EVALSHA of a script in ``lua/`` on the shared Redis.

    limiter = QuotaLimiter(redis.Redis.from_url(settings.broker_url))
    decision = limiter.acquire("completion", "gpt-4o", tokens=1200, app_id="feedback")
    if decision.allowed:
        ...call Azure OpenAI...
        limiter.report(decision.request_id, prompt_tokens=900, completion_tokens=250)

:class:`AsyncQuotaLimiter` is the same on ``redis.asyncio``. Both are thin: the rules, keys and
reply parsing live in :mod:`quota.sansio`; here a call is sent and its reply parsed. Each call is
one EVALSHA of its script's SHA1, sent through quota.scripts' reload: when Redis answers NOSCRIPT
(first use, a restart, SCRIPT FLUSH) the script is loaded and the call sent once more. Safe to
share between threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import redis
import redis.asyncio

from quota.errors import QuotaError
from quota.sansio import (
    DEFAULT_PREFIX,
    Call,
    ChargeModel,
    Decision,
    ExternalUsage,
    LeaseGrant,
    QuotaProtocol,
    QuotaStatus,
    Settlement,
    SettleResult,
)
from quota.scripts import reloading, reloading_async, sha_of
from settings import Settings, get_settings

# The script marks its own errors (a window mismatch) so they are told apart from Redis's.
_SCRIPT_ERROR_MARK = "CONDUIT "

T = TypeVar("T")
# The state hash's fields set_limits writes (absent: the settings' limits).
LIMIT_FIELDS = ("tpm", "rpm")


def _quota_error(error: redis.ResponseError) -> Exception:
    message = str(error)
    if message.startswith(_SCRIPT_ERROR_MARK):
        return QuotaError(message.removeprefix(_SCRIPT_ERROR_MARK))
    return error


class _LimiterBase:
    """What both limiters hold: the protocol and which deployments this process registered."""

    def __init__(
        self,
        client: Any,
        settings: Settings | None = None,
        *,
        window_s: float | None = None,
        prefix: str = DEFAULT_PREFIX,
        charge_models: Mapping[str, ChargeModel] | None = None,
    ) -> None:
        self.client = client
        self.protocol = QuotaProtocol(
            settings or get_settings(),
            window_s=window_s,
            prefix=prefix,
            charge_models=charge_models,
        )
        # Deployments this process already added to the registry (all_status lists them).
        self._registered: set[str] = set()

    @property
    def window_s(self) -> float:
        return self.protocol.window_s

    def _unregistered(self, pool: str, deployment: str) -> str | None:
        member = self.protocol.registry_member(pool, deployment)
        return None if member in self._registered else member


class QuotaLimiter(_LimiterBase):
    """The limiter on a blocking ``redis.Redis`` client."""

    def __init__(self, client: redis.Redis, settings: Settings | None = None, **options: Any):
        super().__init__(client, settings, **options)

    def _run(self, call: Call[T]) -> T:
        # Not redis-py's Script: its per-call bookkeeping cost a third of a decision.
        command = (sha_of(call.script), len(call.keys), *call.keys, *call.args)
        try:
            reply = reloading(self.client, call.script, self.client.evalsha, *command)
        except redis.ResponseError as error:
            raise _quota_error(error) from None
        return call.parse(reply)

    def _register(self, pool: str, deployment: str) -> None:
        member = self._unregistered(pool, deployment)
        if member:
            self.client.sadd(self.protocol.registry_key, member)
            self._registered.add(member)

    def acquire(
        self, pool: str, deployment: str, tokens: int, app_id: str, lane: str = "batch"
    ) -> Decision:
        """Lock ``tokens`` and one request on the first deployment of ``deployment`` (a model or
        one deployment) with room, or refuse with the exact wait until one has.
        ``decision.deployment`` says where the request must go."""
        return self.acquire_timed(pool, deployment, tokens, app_id, lane)[0]

    def acquire_timed(
        self, pool: str, deployment: str, tokens: int, app_id: str, lane: str = "batch"
    ) -> tuple[Decision, int]:
        """``acquire`` and the server time it decided at (µs), for audits and benchmarks."""
        call = self.protocol.acquire(pool, deployment, tokens, app_id, lane)
        self._register(pool, deployment)
        return self._run(call)

    def acquire_with_lease(
        self,
        pool: str,
        deployment: str,
        tokens: int,
        app_id: str,
        *,
        lease_requests: int,
        lease_tokens: int,
        lease_hold_s: float,
    ) -> tuple[Decision, int, LeaseGrant | None]:
        """``acquire_timed`` (batch lane), and a lease beside it when there is room (see
        quota/leases.py)."""
        call = self.protocol.acquire_with_lease(
            pool,
            deployment,
            tokens,
            app_id,
            lease_requests=lease_requests,
            lease_tokens=lease_tokens,
            lease_hold_s=lease_hold_s,
        )
        self._register(pool, deployment)
        return self._run(call)

    def settle_many(
        self, pool: str, model: str, deployment: str, operations: list[str]
    ) -> list[SettleResult]:
        """settle.lua's ``operations`` on one deployment in one call, in order."""
        return self._run(self.protocol.settle_many(pool, model, deployment, operations))

    def report(
        self,
        request_id: str,
        prompt_tokens: int,
        completion_tokens: int = 0,
        *,
        pool: str | None = None,
    ) -> Settlement:
        """Settle a lock with actual usage (``pool``: refuse an id from another pool)."""
        return self._run(self.protocol.report(request_id, prompt_tokens, completion_tokens, pool))

    def release(self, request_id: str, *, pool: str | None = None) -> Settlement:
        """Give back a lock whose call never reached upstream."""
        return self._run(self.protocol.release(request_id, pool))

    def reject(self, request_id: str, cooldown_s: float, *, pool: str | None = None) -> Settlement:
        """The upstream answered 429 (or 5xx): keep the charge, and skip the deployment for
        ``cooldown_s`` in every process."""
        return self._run(self.protocol.reject(request_id, cooldown_s, pool))

    def restamp(self, request_id: str, *, pool: str | None = None) -> int:
        """Count the lock's charge from now: the request leaves later than the margin covers.
        The server time (µs) it is counted from."""
        return self._run(self.protocol.restamp(request_id, pool))

    def observe_upstream(
        self,
        pool: str,
        deployment: str,
        remaining_tokens: int | None = None,
        remaining_requests: int | None = None,
        *,
        request_id: str | None = None,
        lasts_s: float | None = None,
    ) -> ExternalUsage:
        """Book what upstream's x-ratelimit-remaining-* headers say others spent.

        ``remaining_tokens`` is per window; ``remaining_requests`` per sixth of it (RPM/6 per
        10 s), as Azure's ``x-ratelimit-remaining-requests`` counts. ``request_id``: the
        request whose answer carried them, so they are weighed against our window as it was
        when that request was sent (charges that left it since were in the upstream's count).
        ``lasts_s``: how long the upstream says its excess lasts (a 429's retry-after)."""
        return self._run(
            self.protocol.observe(
                pool,
                deployment,
                remaining_tokens,
                remaining_requests,
                request_id=request_id,
                lasts_s=lasts_s,
            )
        )

    def status(self, pool: str, deployment: str) -> QuotaStatus:
        return self._run(self.protocol.status(pool, deployment))

    def all_status(self) -> list[QuotaStatus]:
        """Every pool+deployment in settings or ever used on this Redis."""
        members = self.client.smembers(self.protocol.registry_key)
        return [
            self.status(pool, deployment)
            for pool, deployment in self.protocol.known_deployments(members)
        ]

    def model_status(self, pool: str, model: str) -> list[QuotaStatus]:
        """Each deployment of ``model`` (one when it has no spill-over)."""
        return [self.status(pool, name) for name in self.protocol.deployments_of(pool, model)]

    def set_limits(
        self, pool: str, deployment: str, tpm: int | None = None, rpm: int | None = None
    ) -> None:
        """Change limits for every process at once; the next decision uses them."""
        limits = self.protocol.limits_mapping(pool, tpm, rpm)
        self.client.hset(self.protocol.limits_key(pool, deployment), mapping=limits)
        self._register(pool, deployment)

    def clear_limits(self, pool: str, deployment: str) -> None:
        """Forget limits set at run time: the settings' values apply again, in every process."""
        self.client.hdel(self.protocol.limits_key(pool, deployment), *LIMIT_FIELDS)


class AsyncQuotaLimiter(_LimiterBase):
    """The limiter on a ``redis.asyncio.Redis`` client; the same methods, awaited."""

    def __init__(
        self, client: redis.asyncio.Redis, settings: Settings | None = None, **options: Any
    ):
        super().__init__(client, settings, **options)

    async def _run(self, call: Call[T]) -> T:
        command = (sha_of(call.script), len(call.keys), *call.keys, *call.args)
        try:
            reply = await reloading_async(self.client, call.script, self.client.evalsha, *command)
        except redis.ResponseError as error:
            raise _quota_error(error) from None
        return call.parse(reply)

    async def _register(self, pool: str, deployment: str) -> None:
        member = self._unregistered(pool, deployment)
        if member:
            await self.client.sadd(self.protocol.registry_key, member)
            self._registered.add(member)

    async def acquire(
        self, pool: str, deployment: str, tokens: int, app_id: str, lane: str = "batch"
    ) -> Decision:
        return (await self.acquire_timed(pool, deployment, tokens, app_id, lane))[0]

    async def acquire_timed(
        self, pool: str, deployment: str, tokens: int, app_id: str, lane: str = "batch"
    ) -> tuple[Decision, int]:
        call = self.protocol.acquire(pool, deployment, tokens, app_id, lane)
        await self._register(pool, deployment)
        return await self._run(call)

    async def acquire_with_lease(
        self,
        pool: str,
        deployment: str,
        tokens: int,
        app_id: str,
        *,
        lease_requests: int,
        lease_tokens: int,
        lease_hold_s: float,
    ) -> tuple[Decision, int, LeaseGrant | None]:
        call = self.protocol.acquire_with_lease(
            pool,
            deployment,
            tokens,
            app_id,
            lease_requests=lease_requests,
            lease_tokens=lease_tokens,
            lease_hold_s=lease_hold_s,
        )
        await self._register(pool, deployment)
        return await self._run(call)

    async def settle_many(
        self, pool: str, model: str, deployment: str, operations: list[str]
    ) -> list[SettleResult]:
        return await self._run(self.protocol.settle_many(pool, model, deployment, operations))

    async def report(
        self,
        request_id: str,
        prompt_tokens: int,
        completion_tokens: int = 0,
        *,
        pool: str | None = None,
    ) -> Settlement:
        return await self._run(
            self.protocol.report(request_id, prompt_tokens, completion_tokens, pool)
        )

    async def release(self, request_id: str, *, pool: str | None = None) -> Settlement:
        return await self._run(self.protocol.release(request_id, pool))

    async def reject(
        self, request_id: str, cooldown_s: float, *, pool: str | None = None
    ) -> Settlement:
        return await self._run(self.protocol.reject(request_id, cooldown_s, pool))

    async def restamp(self, request_id: str, *, pool: str | None = None) -> int:
        return await self._run(self.protocol.restamp(request_id, pool))

    async def observe_upstream(
        self,
        pool: str,
        deployment: str,
        remaining_tokens: int | None = None,
        remaining_requests: int | None = None,
        *,
        request_id: str | None = None,
        lasts_s: float | None = None,
    ) -> ExternalUsage:
        return await self._run(
            self.protocol.observe(
                pool,
                deployment,
                remaining_tokens,
                remaining_requests,
                request_id=request_id,
                lasts_s=lasts_s,
            )
        )

    async def status(self, pool: str, deployment: str) -> QuotaStatus:
        return await self._run(self.protocol.status(pool, deployment))

    async def all_status(self) -> list[QuotaStatus]:
        members = await self.client.smembers(self.protocol.registry_key)
        return [
            await self.status(pool, deployment)
            for pool, deployment in self.protocol.known_deployments(members)
        ]

    async def set_limits(
        self, pool: str, deployment: str, tpm: int | None = None, rpm: int | None = None
    ) -> None:
        limits = self.protocol.limits_mapping(pool, tpm, rpm)
        await self.client.hset(self.protocol.limits_key(pool, deployment), mapping=limits)
        await self._register(pool, deployment)

    async def model_status(self, pool: str, model: str) -> list[QuotaStatus]:
        return [await self.status(pool, name) for name in self.protocol.deployments_of(pool, model)]

    async def clear_limits(self, pool: str, deployment: str) -> None:
        await self.client.hdel(self.protocol.limits_key(pool, deployment), *LIMIT_FIELDS)
