"""Whether a task the ingress published is on disk when its message is completed on the bus.

The ingress completes a message only after Redis acknowledged its ledger record and its task.
Acknowledged is not yet on disk: Redis writes its AOF before it answers, but fsyncs it as
``appendfsync`` says. A crash of the Redis process loses nothing (the writes are in the file);
a power loss or a host crash loses what was not fsynced yet:

- the local bus lives in the same Redis, so its completion of a message is in the same AOF,
  after the message's ledger record and task. The AOF is one ordered log, and what a power loss
  takes is always its end: it takes the completion with the record, and the message is
  delivered again. No fsync policy loses a message here;
- Service Bus completes a message outside Redis. With ``appendfsync always`` every write is
  fsynced before it is answered, so nothing is lost. With ``everysec`` (Azure Cache for Redis's
  AOF persistence, and Redis's default) up to about a second of tasks, whose messages were
  already completed, can be lost with the host. :func:`broker_durability` says which, and the
  bridge logs it at start. (Redis 7.2's ``WAITAOF`` would let the bridge wait for the fsync of
  each batch instead; Redis 6.2 and 7.0, which Conduit runs on, do not have it.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis


@dataclass(frozen=True)
class Durability:
    """``durable``: a write Redis acknowledged survives a power loss. ``detail``: one line."""

    durable: bool
    detail: str


def broker_durability(client: redis.Redis) -> Durability:
    """Read the broker Redis's AOF policy (CONFIG GET; managed Redis may refuse it)."""
    try:
        config = cast(dict[str, str], client.config_get("append*"))
    except redis.ResponseError as error:
        return Durability(
            False,
            f"cannot read the broker Redis's AOF policy ({error}); unless it fsyncs every "
            "write (appendfsync always), a power loss can lose about the last second of tasks "
            "whose messages Service Bus already completed",
        )
    if config.get("appendonly") != "yes":
        return Durability(
            False,
            "the broker Redis keeps no AOF (appendonly no): a Redis restart loses every task "
            "whose message Service Bus already completed; set appendonly yes and appendfsync "
            "always (REDIS_APPENDFSYNC=always for the embedded Redis)",
        )
    policy = config.get("appendfsync")
    if policy == "always":
        return Durability(True, "the broker Redis fsyncs every write (appendfsync always)")
    return Durability(
        False,
        f"the broker Redis fsyncs its AOF with appendfsync {policy}: a power loss or host crash "
        "can lose about the last second of tasks whose messages Service Bus already completed; "
        "set appendfsync always (REDIS_APPENDFSYNC=always for the embedded Redis) to close it",
    )
