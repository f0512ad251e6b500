"""TokenClient: the older HTTP token counter's client, now backed by the Redis limiter.

Code written for the older service runs unchanged with the import swapped:

    from quota.client import TokenClient        # was: from common.token_client import TokenClient
    client = TokenClient(app_id="my_app")
    allowed, request_id, error = await client.lock_tokens(1000)
    await client.report_usage(request_id, prompt_tokens=500, completion_tokens=200)
    status = await client.get_status()

:class:`TokenClient` is asyncio, as the older one was; :class:`SyncTokenClient` has the same methods
for blocking code such as Celery tasks. Each pool's deployment comes from settings
(APP_OPENAI_ENGINE, APP_EMBEDDING_ENGINE, APP_WHISPER_ENGINE) unless ``deployments`` overrides it.
The older ``base_url``, ``resource_uri`` and ``use_auth`` arguments are accepted and ignored: there
is no counter service to call any more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import redis
import redis.asyncio

from quota.errors import QuotaError
from quota.limiter import AsyncQuotaLimiter, QuotaLimiter
from quota.sansio import Decision, QuotaStatus, check_pool
from settings import Settings, get_settings
from settings.state_redis import async_state_redis, state_redis

logger = logging.getLogger("conduit.quota.client")

# What the older GET /status answered; the whisper pool had request fields only.
_STATUS_FIELDS = (
    "available_tokens",
    "used_tokens",
    "locked_tokens",
    "available_requests",
    "used_requests",
    "locked_requests",
    "reset_time_seconds",
)
_WHISPER_STATUS_FIELDS = (
    "available_requests",
    "used_requests",
    "locked_requests",
    "reset_time_seconds",
)

LockResult = tuple[bool, str | None, str | None]  # (allowed, request_id, error)


def _lock_result(decision: Decision) -> LockResult:
    return decision.allowed, decision.request_id, decision.reason


def _status_fields(status: QuotaStatus) -> dict[str, Any]:
    names = _WHISPER_STATUS_FIELDS if status.pool == "whisper" else _STATUS_FIELDS
    return {name: getattr(status, name) for name in names}


def _on_pool(action: str, pool: str) -> Callable[..., Any]:
    """One of the older per-pool names, calling ``action`` (lock/report/release/status)."""

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, action)(pool, *args, **kwargs)

    method.__doc__ = f"The older client's name for ``{action}('{pool}', ...)``."
    return method


class _OlderNames:
    """The older client's twelve method names, as one table so both clients get the same."""

    lock_tokens = _on_pool("lock", "completion")
    report_usage = _on_pool("report", "completion")
    release_tokens = _on_pool("release", "completion")
    get_status = _on_pool("status", "completion")
    lock_embedding_tokens = _on_pool("lock", "embedding")
    report_embedding_usage = _on_pool("report", "embedding")
    release_embedding_tokens = _on_pool("release", "embedding")
    get_embedding_status = _on_pool("status", "embedding")
    lock_whisper_rate = _on_pool("lock", "whisper")
    report_whisper_usage = _on_pool("report", "whisper")
    release_whisper_rate = _on_pool("release", "whisper")
    get_whisper_status = _on_pool("status", "whisper")


class _ClientBase(_OlderNames):
    def __init__(
        self, app_id: str, settings: Settings, deployments: Mapping[str, str] | None
    ) -> None:
        self.app_id = app_id
        self.deployments: dict[str, str] = {pool.name: pool.deployment for pool in settings.pools()}
        self.deployments.update(deployments or {})

    def _deployment(self, pool: str) -> str:
        return self.deployments[check_pool(pool)]

    def _settle_failed(self, action: str, request_id: str, error: QuotaError) -> bool:
        # The older client answered False when the counter refused a report or release.
        logger.warning("quota %s of %s refused: %s", action, request_id, error)
        return False


class TokenClient(_ClientBase):
    """The older asyncio TokenClient's methods and return shapes, on ``redis.asyncio``."""

    def __init__(
        self,
        app_id: str,
        base_url: str | None = None,
        resource_uri: str | None = None,
        use_auth: bool = False,
        *,
        limiter: AsyncQuotaLimiter | None = None,
        settings: Settings | None = None,
        deployments: Mapping[str, str] | None = None,
    ) -> None:
        settings = settings or get_settings()
        super().__init__(app_id, settings, deployments)
        self._own_redis: redis.asyncio.Redis | None = None
        if limiter is None:
            # The state Redis (STATE_REDIS_URL, else REDIS_URL; a cluster when it says so).
            self._own_redis = async_state_redis(settings)
            limiter = AsyncQuotaLimiter(self._own_redis, settings)
        self.limiter = limiter

    async def lock(self, pool: str, token_count: int = 0) -> LockResult:
        decision = await self.limiter.acquire(
            pool, self._deployment(pool), token_count, self.app_id
        )
        return _lock_result(decision)

    async def report(
        self, pool: str, request_id: str, prompt_tokens: int = 0, completion_tokens: int = 0
    ) -> bool:
        try:
            await self.limiter.report(request_id, prompt_tokens, completion_tokens, pool=pool)
        except QuotaError as error:
            return self._settle_failed("report", request_id, error)
        return True

    async def release(self, pool: str, request_id: str) -> bool:
        try:
            await self.limiter.release(request_id, pool=pool)
        except QuotaError as error:
            return self._settle_failed("release", request_id, error)
        return True

    async def status(self, pool: str) -> dict[str, Any]:
        return _status_fields(await self.limiter.status(pool, self._deployment(pool)))

    async def aclose(self) -> None:
        """Close the Redis connection this client opened (none when given a limiter)."""
        if self._own_redis is not None:
            await self._own_redis.aclose()

    async def __aenter__(self) -> TokenClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class SyncTokenClient(_ClientBase):
    """TokenClient for blocking code: the same methods, not awaited."""

    def __init__(
        self,
        app_id: str,
        base_url: str | None = None,
        resource_uri: str | None = None,
        use_auth: bool = False,
        *,
        limiter: QuotaLimiter | None = None,
        settings: Settings | None = None,
        deployments: Mapping[str, str] | None = None,
    ) -> None:
        settings = settings or get_settings()
        super().__init__(app_id, settings, deployments)
        self._own_redis: redis.Redis | None = None
        if limiter is None:
            # The state Redis (STATE_REDIS_URL, else REDIS_URL; a cluster when it says so).
            self._own_redis = state_redis(settings)
            limiter = QuotaLimiter(self._own_redis, settings)
        self.limiter = limiter

    def lock(self, pool: str, token_count: int = 0) -> LockResult:
        decision = self.limiter.acquire(pool, self._deployment(pool), token_count, self.app_id)
        return _lock_result(decision)

    def report(
        self, pool: str, request_id: str, prompt_tokens: int = 0, completion_tokens: int = 0
    ) -> bool:
        try:
            self.limiter.report(request_id, prompt_tokens, completion_tokens, pool=pool)
        except QuotaError as error:
            return self._settle_failed("report", request_id, error)
        return True

    def release(self, pool: str, request_id: str) -> bool:
        try:
            self.limiter.release(request_id, pool=pool)
        except QuotaError as error:
            return self._settle_failed("release", request_id, error)
        return True

    def status(self, pool: str) -> dict[str, Any]:
        return _status_fields(self.limiter.status(pool, self._deployment(pool)))

    def close(self) -> None:
        """Close the Redis connection this client opened (none when given a limiter)."""
        if self._own_redis is not None:
            self._own_redis.close()

    def __enter__(self) -> SyncTokenClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
