"""The limiter's Lua scripts: ``lua/prelude.lua`` (the window arithmetic) joined to one script per
operation at load time, as bridge/lua does, each known by the SHA1 Redis files it under.

Every caller (the limiters, the dashboard's pipelined snapshot) sends ``EVALSHA`` with
:func:`sha_of` through :func:`reloading` (or :func:`reloading_async` on ``redis.asyncio``): when
Redis answers NOSCRIPT (first use, a restart, SCRIPT FLUSH), it loads :func:`source_of` and sends
again. One place holds the scripts, their digests and the reload.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from functools import cache
from importlib.resources import files
from typing import Any, Literal, ParamSpec, Protocol, TypeVar

import redis.exceptions

ScriptName = Literal["acquire", "settle", "observe", "status"]
SCRIPT_NAMES: tuple[ScriptName, ...] = ("acquire", "settle", "observe", "status")


def _read(name: str) -> str:
    return files("quota").joinpath("lua", f"{name}.lua").read_text()


@cache
def source_of(name: ScriptName) -> str:
    """The prelude and the operation, as one script."""
    return _read("prelude") + "\n" + _read(name)


@cache
def sha_of(name: ScriptName) -> str:
    return hashlib.sha1(source_of(name).encode()).hexdigest()


P = ParamSpec("P")
T = TypeVar("T")


class ScriptLoader(Protocol):
    """A Redis client (plain, cluster or asyncio): what the reload needs of it."""

    def script_load(self, script: str) -> Any: ...


def reloading(
    client: ScriptLoader, name: ScriptName, send: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """``send(*args, **kwargs)``, which runs script ``name`` by its digest (an EVALSHA, or a
    pipeline holding some); on NOSCRIPT, load the script into ``client`` and send once more.

    ``send`` and its arguments, not a closure: the limiter's hot path builds nothing per call."""
    try:
        return send(*args, **kwargs)
    except redis.exceptions.NoScriptError:
        client.script_load(source_of(name))
        return send(*args, **kwargs)


async def reloading_async(
    client: ScriptLoader,
    name: ScriptName,
    send: Callable[P, Awaitable[T]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """:func:`reloading` on a ``redis.asyncio`` client: the sends and the load awaited."""
    try:
        return await send(*args, **kwargs)
    except redis.exceptions.NoScriptError:
        await client.script_load(source_of(name))
        return await send(*args, **kwargs)
