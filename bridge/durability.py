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
  already completed, can be lost with the host. :func:`redis_durability` says which, and the
  bridge logs it at start. (Redis 7.2's ``WAITAOF`` would let the bridge wait for the fsync of
  each batch instead; Redis 6.2 and 7.0, which Conduit runs on, do not have it.)

With Conduit's state on a Redis of its own (STATE_REDIS_URL, maybe a cluster), the one-ordered-log
argument no longer holds, whichever the bus: a message's writes are spread over two AOFs (the
state's: ledger record, the local bus's completion, the outbox entry; the broker's: the task and
its result state), and on a cluster over one AOF per node (the ledger and outbox live in the
output queue's slot, the local bus's queue in the input queue's). A power loss cuts each log at
its own point. The local bus can then keep a completion while another node loses the ledger
record and the broker the task; or the broker keeps a task's SUCCESS while the state loses its
outbox entry, and the sweeper, seeing SUCCESS, never publishes it again. So then every Redis
involved, the broker and each state primary, must fsync every write (``appendfsync always``):
:func:`bridge_durability` asks each of them, and the bridge logs the ones that do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis
import redis.cluster


@dataclass(frozen=True)
class Durability:
    """``durable``: a write Redis acknowledged survives a power loss. ``detail``: one line."""

    durable: bool
    detail: str


def redis_durability(client: redis.Redis, name: str = "the broker Redis") -> Durability:
    """Read one Redis server's AOF policy (CONFIG GET; managed Redis may refuse it); ``name``
    says which server in the detail."""
    try:
        config = cast(dict[str, str], client.config_get("append*"))
    except redis.ResponseError as error:
        return Durability(
            False,
            f"cannot read {name}'s AOF policy ({error}); unless it fsyncs every "
            "write (appendfsync always), a power loss can lose about the last second of "
            "writes whose messages the bus already completed",
        )
    if config.get("appendonly") != "yes":
        return Durability(
            False,
            f"{name} keeps no AOF (appendonly no): a Redis restart loses every write "
            "whose message the bus already completed; set appendonly yes and appendfsync "
            "always (REDIS_APPENDFSYNC=always for the embedded Redis)",
        )
    policy = config.get("appendfsync")
    if policy == "always":
        return Durability(True, f"{name} fsyncs every write (appendfsync always)")
    return Durability(
        False,
        f"{name} fsyncs its AOF with appendfsync {policy}: a power loss or host crash "
        "can lose about the last second of writes whose messages the bus already completed; "
        "set appendfsync always (REDIS_APPENDFSYNC=always for the embedded Redis) to close it",
    )


def bridge_durability(
    broker: redis.Redis, state: redis.Redis, *, local_bus: bool, state_apart: bool
) -> list[Durability]:
    """One line per Redis whose AOF policy decides whether a completed message is safe (see the
    module's docstring): none when the local bus shares the broker's Redis, the broker's when
    Service Bus does, and the broker's and every state primary's when the state is apart."""
    if not state_apart:
        return [] if local_bus else [redis_durability(broker)]
    found = [redis_durability(broker)]
    if isinstance(state, redis.cluster.RedisCluster):
        for node in state.get_primaries():
            # Each primary keeps its own AOF: ask each, through the cluster client's own
            # connection to it.
            client = state.get_redis_connection(node)
            found.append(redis_durability(client, f"state Redis node {node.name}"))
    else:
        found.append(redis_durability(state, "the state Redis"))
    return found
