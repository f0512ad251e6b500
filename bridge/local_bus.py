"""The local bus: Service Bus queues kept in Redis, used when no namespace is configured.

It keeps the Service Bus semantics the bridge relies on, so dev and tests exercise the same code
path as production: peek-lock with a lock duration; an unsettled message comes back when its lock
expires, with ``delivery_count`` one higher; after the maximum delivery count it moves to the
dead-letter sub-queue (reason ``MaxDeliveryCountExceeded``), as it does when dead-lettered on
purpose with a reason and description; ``message_id``, ``correlation_id``, application
properties and scheduled enqueue time travel with the message; a ``message_id`` sent again within
the duplicate detection window is dropped; a message over the size limit is refused, as Service
Bus refuses one over its tier's limit.

Every operation is one Lua script from ``lua/`` (the shared head, ``prelude.lua``, documents the
keys): atomic, on the server's clock, and one round trip for a whole batch.

    bus = LocalBus(redis.Redis(decode_responses=True), lock_duration_s=30)
    bus.send("form_iq", [OutgoingMessage(body='{"id": 1}', message_id="m-1")])
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import redis

from bridge.bus_api import OutgoingMessage, ReceivedMessage
from bridge.errors import BusError, BusUnavailable, MessageTooLarge
from settings.state_redis import state_redis

if TYPE_CHECKING:
    from settings import Settings

KEY_PREFIX = "conduit:bus"
# The order every script expects its KEYS in (see lua/prelude.lua).
KEY_NAMES = (
    "seq",
    "messages",
    "ready",
    "scheduled",
    "locked",
    "deliveries",
    "dead",
    "reasons",
    "seen",
    "signal",
)
SCRIPT_DIR = Path(__file__).parent / "lua"


def queue_keys(queue: str) -> dict[str, str]:
    """The Redis keys of one queue, all under the hash tag ``{queue}``."""
    return {name: f"{KEY_PREFIX}:{{{queue}}}:{name}" for name in KEY_NAMES}


@cache
def _script_source(name: str) -> str:
    return (SCRIPT_DIR / "prelude.lua").read_text() + (SCRIPT_DIR / f"{name}.lua").read_text()


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """Redis errors as the bridge's bus errors: the one place the local bus meets redis-py's."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise BusUnavailable(f"local bus (Redis) unreachable: {error}") from error
    except redis.RedisError as error:
        raise BusError(f"local bus (Redis) refused the operation: {error}") from error


def _envelope(message: OutgoingMessage) -> str:
    return json.dumps(
        {
            "message_id": message.message_id,
            "correlation_id": message.correlation_id,
            "body": message.body,
            "application_properties": dict(message.application_properties),
            "enqueued_time": datetime.now(UTC).isoformat(),
        },
        ensure_ascii=False,
    )


def _enqueue_at_ms(message: OutgoingMessage) -> int:
    when = message.scheduled_enqueue_time
    return int(when.timestamp() * 1000) if when else 0


def _message(seq: str, delivery: str | int | None, envelope: str, **extra: Any) -> ReceivedMessage:
    stored = json.loads(envelope)
    return ReceivedMessage(
        body=stored["body"],
        message_id=stored["message_id"],
        correlation_id=stored.get("correlation_id"),
        sequence_number=int(seq),
        delivery_count=int(delivery or 0),
        application_properties=stored["application_properties"],
        enqueued_time=datetime.fromisoformat(stored["enqueued_time"]),
        **extra,
    )


class LocalBus:
    """Queues in one Redis database; thread-safe (redis-py pools its connections)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        lock_duration_s: float = 60.0,
        max_delivery_count: int = 10,
        duplicate_window_s: float = 600.0,
        max_message_bytes: int = 256 * 1024,
        owns_client: bool = False,
    ) -> None:
        if not client.get_encoder().decode_responses:
            raise ValueError("LocalBus needs a Redis client created with decode_responses=True")
        self.client = client
        self.lock_duration_ms = int(lock_duration_s * 1000)
        self.max_delivery_count = max_delivery_count
        self.duplicate_window_ms = int(duplicate_window_s * 1000)
        self.max_message_bytes = max_message_bytes
        self._owns_client = owns_client
        self._scripts: dict[str, Callable[..., Any]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBus:
        # The state Redis (STATE_REDIS_URL, else REDIS_URL; maybe a cluster): every script and
        # transaction here touches one queue's keys, all under its hash tag ``{queue}``.
        client = state_redis(settings, decode_responses=True)
        return cls(
            client,
            lock_duration_s=settings.local_bus_lock_duration_s,
            max_delivery_count=settings.local_bus_max_delivery_count,
            duplicate_window_s=settings.local_bus_duplicate_window_s,
            max_message_bytes=settings.bridge_max_message_bytes,
            owns_client=True,
        )

    def run_script(self, name: str, queue: str, args: Sequence[object]) -> Any:
        if name not in self._scripts:
            self._scripts[name] = self.client.register_script(_script_source(name))
        with _mapped_errors():
            return self._scripts[name](keys=list(queue_keys(queue).values()), args=list(args))

    def receiver(self, queue: str) -> LocalReceiver:
        return LocalReceiver(self, queue)

    def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        """Send all of ``messages``, or none when one is over the size limit."""
        args: list[object] = [self.duplicate_window_ms]
        for message in messages:
            envelope = _envelope(message)
            # The whole stored message counts, ids and properties too, as Service Bus counts
            # a message's headers with its body.
            size = len(envelope.encode())
            if size > self.max_message_bytes:
                raise MessageTooLarge(
                    message.message_id,
                    (
                        f"the message is {size} bytes, {size - self.max_message_bytes} bytes over "
                        f"the local bus's limit of {self.max_message_bytes} bytes"
                    ),
                )
            args += [message.message_id, envelope, _enqueue_at_ms(message)]
        if messages:
            self.run_script("send_messages", queue, args)

    def peek(self, queue: str, max_count: int) -> list[ReceivedMessage]:
        keys = queue_keys(queue)
        with _mapped_errors():
            pipe = self.client.pipeline(transaction=True)
            pipe.zrange(keys["ready"], 0, max_count - 1)
            # Locked and scheduled messages are few (in flight, or waiting): read them all.
            pipe.zrange(keys["locked"], 0, -1)
            pipe.zrange(keys["scheduled"], 0, -1)
            seqs = sorted({int(seq) for members in pipe.execute() for seq in members})[:max_count]
            if not seqs:
                return []
            pipe.hmget(keys["messages"], seqs)
            pipe.hmget(keys["deliveries"], seqs)
            envelopes, deliveries = pipe.execute()
        return [
            _message(str(seq), delivery, envelope)
            for seq, delivery, envelope in zip(seqs, deliveries, envelopes, strict=True)
            if envelope is not None
        ]

    def dead_letters(self, queue: str, max_count: int) -> list[ReceivedMessage]:
        keys = queue_keys(queue)
        with _mapped_errors():
            # redis-py types a sync client's replies as "maybe awaitable": cast to what they are.
            seqs = cast(list[str], self.client.zrange(keys["dead"], 0, max_count - 1))
            if not seqs:
                return []
            pipe = self.client.pipeline(transaction=True)
            pipe.hmget(keys["messages"], seqs)
            pipe.hmget(keys["deliveries"], seqs)
            pipe.hmget(keys["reasons"], seqs)
            envelopes, deliveries, reasons = pipe.execute()
        dead = []
        for seq, envelope, delivery, reason_json in zip(
            seqs, envelopes, deliveries, reasons, strict=True
        ):
            reason = json.loads(reason_json or "{}")
            dead.append(
                _message(
                    seq,
                    delivery,
                    envelope,
                    dead_letter_reason=reason.get("reason"),
                    dead_letter_description=reason.get("description"),
                )
            )
        return dead

    def resubmit_dead_letters(self, queue: str, max_count: int) -> int:
        return int(self.run_script("resubmit_dead_letters", queue, [max_count]))

    def active_message_counts(self) -> dict[str, int]:
        # Every queue that ever held a message has a "ready" sorted set while it holds one. On a
        # cluster, scan_iter visits every primary; the ZCARDs go to each key's own node.
        prefix, suffix = f"{KEY_PREFIX}:{{", "}:ready"
        with _mapped_errors():
            keys = list(self.client.scan_iter(match=f"{prefix}*{suffix}", count=1000))
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.zcard(key)
            counts = pipe.execute()
        return {
            key[len(prefix) : -len(suffix)]: int(count)
            for key, count in zip(keys, counts, strict=True)
            if count
        }

    def close(self) -> None:
        if self._owns_client:
            self.client.close()


def _lock(message: ReceivedMessage) -> tuple[str, str]:
    """What this bus's receiver put in ``lock``: the sequence number and delivery count."""
    return cast(tuple[str, str], message.lock)


class LocalReceiver:
    """A peek-lock receiver on one local-bus queue."""

    def __init__(self, bus: LocalBus, queue: str) -> None:
        self.bus, self.queue = bus, queue
        self._signal_key = queue_keys(queue)["signal"]

    def receive(self, max_count: int, max_wait_s: float) -> list[ReceivedMessage]:
        messages = self._take(max_count)
        if messages or max_wait_s <= 0:
            return messages
        # Like Service Bus's long poll: a send pushes a token, so the wait ends as soon as
        # messages arrive; scheduled messages and expired locks are picked up at the timeout.
        with _mapped_errors():
            self.bus.client.blpop([self._signal_key], timeout=max_wait_s)
        return self._take(max_count)

    def _take(self, max_count: int) -> list[ReceivedMessage]:
        flat = self.bus.run_script(
            "receive_messages",
            self.queue,
            [max_count, self.bus.lock_duration_ms, self.bus.max_delivery_count],
        )
        return [
            _message(seq, delivery, envelope, lock=(seq, str(delivery)))
            for seq, delivery, _expires, envelope in zip(*[iter(flat)] * 4, strict=True)
        ]

    def _settle(
        self,
        disposition: str,
        messages: Sequence[ReceivedMessage],
        reason: str = "",
        description: str = "",
    ) -> list[ReceivedMessage]:
        if not messages:
            return []
        args: list[object] = [disposition, self.bus.max_delivery_count, reason, description]
        for message in messages:
            args += _lock(message)
        lost = set(self.bus.run_script("settle_messages", self.queue, args))
        return [message for message in messages if _lock(message)[0] in lost]

    def complete(self, messages: Sequence[ReceivedMessage]) -> list[ReceivedMessage]:
        return self._settle("complete", messages)

    def abandon(self, messages: Sequence[ReceivedMessage]) -> list[ReceivedMessage]:
        return self._settle("abandon", messages)

    def dead_letter(self, message: ReceivedMessage, reason: str, description: str) -> bool:
        return not self._settle("dead_letter", [message], reason, description)

    def close(self) -> None:
        """Nothing to release: locks this receiver holds expire on their own, as on Service Bus."""
