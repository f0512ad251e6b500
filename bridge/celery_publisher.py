"""Publishing task requests to Celery, and measuring a Celery queue's backlog.

A batch goes out through one producer in one kombu publish batch (a single pipelined round trip
on Redis), so the bridge pays one round trip per batch, not per message. A batch that fails is
treated as not published at all: some of it may have reached the broker, but publishing those
again is harmless (same task ids; a task writes one result per id) while completing a message
that was not published would lose it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import redis
from celery import Celery
from kombu.exceptions import KombuError

from bridge.errors import BrokerUnavailable
from bridge.routing import TaskRequest


@contextmanager
def _mapped_errors(doing: str) -> Iterator[None]:
    """Broker errors as BrokerUnavailable: the one place the bridge meets kombu's errors."""
    try:
        yield
    except (KombuError, redis.RedisError, OSError) as error:
        raise BrokerUnavailable(f"{doing} failed: {error}") from error


class CeleryPublisher:
    def __init__(self, app: Celery) -> None:
        self.app = app

    def publish(self, requests: Sequence[TaskRequest]) -> None:
        """Publish every request, or raise BrokerUnavailable (see the module docstring)."""
        if not requests:
            return
        with _mapped_errors(f"publishing {len(requests)} task(s)"), \
                self.app.producer_pool.acquire(block=True) as producer, \
                producer.batch(max_size=10 * len(requests)):
            for request in requests:
                self.app.send_task(
                    request.task_name, args=[request.body],
                    kwargs={"out_queue": request.out_queue, "message_id": request.message_id},
                    task_id=request.task_id, queue=request.queue, producer=producer,
                )

    def backlog(self, queue: str) -> int:
        """Messages waiting in a Celery queue (not yet taken by a worker)."""
        with _mapped_errors(f"measuring queue {queue!r}"), \
                self.app.pool.acquire(block=True) as connection:
            return connection.default_channel.queue_declare(queue=queue).message_count

    def close(self) -> None:
        self.app.close()
