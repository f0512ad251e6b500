"""The limiter's Lua scripts: ``lua/prelude.lua`` (the window arithmetic) joined to one script per
operation at load time, as bridge/lua does, each known by the SHA1 Redis files it under.

Every caller (the limiters, the dashboard's pipelined snapshot) sends ``EVALSHA`` with
:func:`sha_of` and, when Redis answers NOSCRIPT (first use, a restart, SCRIPT FLUSH), loads
:func:`source_of` and sends again: one place holds the scripts and their digests.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.resources import files
from typing import Literal

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
