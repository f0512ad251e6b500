"""A narrow patch around a kombu 5.7 bug that made a worker exit when Redis went away.

What happens (reproduced by tests/test_worker_broker_outage.py): with a task running (its
message delivered and not yet acknowledged, as ``acks_late`` wants) the broker connection
drops. Celery closes the consumer's channel; kombu's Redis channel first drops its connection
pools and forgets its connection, then ``virtual.Channel.close`` asks the QoS to put the unacked
messages back (``restore_unacked``). That needs a Redis client, so kombu builds a new pool from
``self.connection.client``, which is None by now:

    AttributeError: 'NoneType' object has no attribute 'hostname'

Celery takes it for an "Unrecoverable error" and the worker shuts down. Without a supervisor it
stays gone. kombu 5.7.0 is the newest release, so no pin avoids it.

The patch: when the channel has no connection left to restore with, skip the restore instead
of crashing. Nothing is lost: each unacked message is still in the transport's unacked index in
Redis (written when it was delivered), and kombu's visibility-timeout sweep
(``unacked_restore_interval`` in worker/celery_app.py) puts it back in its queue once Redis is
reachable again; our tasks are idempotent by task id, so a task that had finished meanwhile
answers from its stored outcome. Every other call goes to kombu's own method unchanged.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from kombu.transport import redis as redis_transport

log = logging.getLogger(__name__)

_PATCHED_MARK = "_conduit_patched"


def _connection_gone(qos: Any) -> bool:
    """Whether the QoS's channel has no connection parameters left to open a client with."""
    connection = getattr(qos.channel, "connection", None)
    return connection is None or getattr(connection, "client", None) is None


def patch_restore_unacked() -> None:
    """Install the patch (idempotent)."""
    original = redis_transport.QoS.restore_unacked
    if getattr(original, _PATCHED_MARK, False):
        return

    @functools.wraps(original)
    def restore_unacked(self: Any, client: Any = None) -> Any:
        if client is None and _connection_gone(self):
            log.warning(
                "broker connection closed before %d unacked message(s) could be restored; "
                "they stay in Redis and come back after the visibility timeout",
                len(self._delivered),
            )
            return None
        return original(self, client)

    setattr(restore_unacked, _PATCHED_MARK, True)
    redis_transport.QoS.restore_unacked = restore_unacked  # type: ignore[method-assign]  # the patch
