"""A narrow patch around a kombu 5.7 bug that made a worker exit when Redis went away.

What happens (reproduced by tests/test_worker_broker_outage.py): with a task running (its
message delivered and not yet acknowledged, as ``acks_late`` wants) the broker connection
drops. Celery closes the consumer's channel; kombu's Redis channel first drops its connection
pools and forgets its connection, then ``virtual.Channel.close`` asks the QoS to put the unacked
messages back (``restore_unacked``). That needs a Redis client, so the channel builds a new pool
from ``self.connection.client``, and its connection is None by now:

    AttributeError: 'NoneType' object has no attribute 'hostname'

Celery takes it for an "Unrecoverable error" and the worker shuts down; without a supervisor it
stays gone. The task that was running meets the same when it finishes: its ack goes to the
closed channel (``'NoneType' object has no attribute 'client'``). kombu 5.7.0 is the newest
release, so no pin avoids it.

The patch: a channel whose connection is gone raises redis's ``ConnectionError`` where it would
build connection parameters, instead of an AttributeError. That is an error kombu and Celery
already handle as a lost connection: closing the channel ignores it, and a failed ack is logged
("Couldn't ack") and left to redelivery. Nothing is lost: each unacked message is still in the
transport's unacked index in Redis (written when it was delivered), and kombu's
visibility-timeout sweep (``unacked_restore_interval`` in worker/celery_app.py) puts it back in
its queue once Redis is reachable again; our tasks are idempotent by task id, so a task that
had finished meanwhile answers from its stored outcome. A channel with a connection is
untouched.
"""

from __future__ import annotations

import functools
from typing import Any

import redis
from kombu.transport import redis as redis_transport

_PATCHED_MARK = "_conduit_patched"


class ChannelClosed(redis.exceptions.ConnectionError):
    """The channel's broker connection is closed; kombu treats it as a lost connection."""


def patch_closed_channel_connparams() -> None:
    """Install the patch (idempotent)."""
    original = redis_transport.Channel._connparams
    if getattr(original, _PATCHED_MARK, False):
        return

    @functools.wraps(original)
    def connparams(self: Any, *args: Any, **kwargs: Any) -> Any:
        connection = getattr(self, "connection", None)
        if connection is None or getattr(connection, "client", None) is None:
            raise ChannelClosed(
                "the broker connection of this channel is closed; unacked messages stay in "
                "Redis and come back after the visibility timeout"
            )
        return original(self, *args, **kwargs)

    setattr(connparams, _PATCHED_MARK, True)
    redis_transport.Channel._connparams = connparams  # type: ignore[method-assign]  # the patch
