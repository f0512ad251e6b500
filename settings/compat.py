"""Settings of compat/, the older library's classes over Conduit (migration).

Mixed into :class:`settings.config.Settings`; every field is read from the environment there.
"""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, Field


class CompatSettings(BaseModel):
    # Threads that run the blocking Conduit calls behind the older asyncio methods. The work is
    # I/O-bound (HTTP to Azure, Redis), so like the worker's thread pool it may exceed the cores;
    # 8 matches WORKER_CONCURRENCY's default, enough for a service's usual gather() of requests.
    compat_threads: int = Field(8, ge=1, le=256, validation_alias=AliasChoices("COMPAT_THREADS"))
    # AsyncServiceBusHandler: the longest idle sleep between empty receives. The older handler
    # grew its sleep while the queue stayed empty; a new message waits at most this long.
    compat_max_idle_s: float = Field(
        10.0, gt=0, validation_alias=AliasChoices("COMPAT_MAX_IDLE_SECONDS")
    )
