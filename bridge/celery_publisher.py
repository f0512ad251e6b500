"""Publishing task requests to Celery, and measuring what a Celery queue holds.

A batch goes out through one producer in one kombu publish batch (a single pipelined round trip
on Redis), so the bridge pays one round trip per batch, not per message. A batch that fails is
treated as not published at all: some of it may have reached the broker, but publishing those
again is harmless (same task ids; a task writes one result per id) while completing a message
that was not published would lose it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import redis
from celery import Celery
from kombu.exceptions import KombuError, SerializationError
from opentelemetry import context
from opentelemetry.context import Context

from bridge.errors import BrokerUnavailable
from bridge.routing import TaskRequest


def _task_id(payload: bytes | str | dict) -> str:
    message = json.loads(payload) if isinstance(payload, bytes | str) else payload
    return message["headers"]["id"]


@contextmanager
def _mapped_errors(doing: str) -> Iterator[None]:
    """Broker errors as BrokerUnavailable: the one place the bridge meets kombu's errors. A
    body kombu cannot serialise is no broker failure: retrying it later fails the same way, so
    its error passes through, and the ingress pins it on its one message."""
    try:
        yield
    except SerializationError:
        raise
    except (KombuError, redis.RedisError, OSError) as error:
        raise BrokerUnavailable(f"{doing} failed: {error}") from error


class CeleryPublisher:
    def __init__(self, app: Celery) -> None:
        self.app = app

    def publish(
        self, requests: Sequence[TaskRequest], traces: Mapping[str, Context] | None = None
    ) -> None:
        """Publish every request, or raise BrokerUnavailable (see the module docstring).

        ``traces`` maps a task id to the trace context its message arrived in: each task is
        published inside it, so Celery's instrumentation carries it in the task's headers."""
        if not requests:
            return
        traces = traces or {}
        with (
            _mapped_errors(f"publishing {len(requests)} task(s)"),
            self.app.producer_pool.acquire(block=True) as producer,
            producer.batch(max_size=10 * len(requests)),
        ):
            for request in requests:
                trace_context = traces.get(request.task_id)
                token = context.attach(trace_context) if trace_context is not None else None
                try:
                    self.app.send_task(
                        request.task_name,
                        args=[request.body],
                        kwargs={"out_queue": request.out_queue, "message_id": request.message_id},
                        task_id=request.task_id,
                        queue=request.queue,
                        producer=producer,
                    )
                finally:
                    if token is not None:
                        context.detach(token)

    def backlog(self, queue: str) -> int:
        """Messages waiting in a Celery queue (not yet taken by a worker)."""
        with (
            _mapped_errors(f"measuring queue {queue!r}"),
            self.app.pool.acquire(block=True) as connection,
        ):
            return connection.default_channel.queue_declare(queue=queue).message_count

    def held_task_ids(self, queues: Iterable[str]) -> set[str]:
        """Ids of the tasks the broker still holds for ``queues``: waiting in a queue, or taken
        by a worker but not acknowledged (kombu gives those back if the worker dies). Read from
        the Redis transport's own keys; bounded by the bridge's back-pressure high-water mark."""
        with _mapped_errors("listing held tasks"), self.app.pool.acquire(block=True) as connection:
            channel = connection.default_channel
            client = channel.client
            payloads = [message for queue in set(queues) for message in client.lrange(queue, 0, -1)]
            payloads += [json.loads(entry)[0] for entry in client.hvals(channel.unacked_key)]
        return {_task_id(payload) for payload in payloads}

    def close(self) -> None:
        self.app.close()
