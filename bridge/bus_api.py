"""What the bridge needs from a message bus: the interface Service Bus and the local bus share.

Only the interface lives here; ``bridge.bus`` picks an implementation (``connect_bus``). The
two implementations import this module, never ``bridge.bus``, so no import cycle runs through
them.

A :class:`Receiver` hands out messages in peek-lock mode: each stays locked to this receiver until
it is settled (completed, abandoned or dead-lettered) or its lock expires, when the bus delivers
it again with ``delivery_count`` one higher; past the queue's maximum delivery count it goes to
the dead-letter sub-queue. Settling a message whose lock was lost does nothing: the message was,
or will be, delivered again. A :class:`Bus` sends, browses and manages dead letters.

    bus = connect_bus(settings)          # bridge.bus
    receiver = bus.receiver("form_iq")
    batch = receiver.receive(max_count=32, max_wait_s=1.0)
    lost = receiver.complete(batch)      # the messages whose lock had already expired
    bus.send("form_oq", [OutgoingMessage(body="{}", message_id="task-1")])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

PropertyValue = str | int | float | bool


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to send. A ``message_id`` sent again within the queue's duplicate detection
    window is dropped by the bus: the bridge uses the task id, so a re-sent result is dropped."""

    body: str
    message_id: str
    correlation_id: str | None = None
    application_properties: Mapping[str, PropertyValue] = field(default_factory=dict)
    scheduled_enqueue_time: datetime | None = None


@dataclass(frozen=True, eq=False)
class ReceivedMessage:
    """A received (or peeked) message. ``lock`` is what the bus needs to settle it."""

    body: str
    message_id: str
    sequence_number: int
    delivery_count: int
    correlation_id: str | None = None
    application_properties: Mapping[str, PropertyValue] = field(default_factory=dict)
    enqueued_time: datetime | None = None
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None
    # Why the bus could not turn the body into text (``body`` is then empty); the ingress
    # dead-letters such a message instead of failing on it.
    unreadable: str | None = None
    lock: object = field(default=None, repr=False)


class Receiver(Protocol):
    """One queue's receiver in peek-lock mode. Not thread-safe: one thread per receiver."""

    def receive(self, max_count: int, max_wait_s: float) -> list[ReceivedMessage]:
        """Up to ``max_count`` messages, locked; waits at most ``max_wait_s`` for the first."""

    def complete(self, messages: Sequence[ReceivedMessage]) -> list[ReceivedMessage]:
        """Remove the messages from the queue; returns those whose lock was lost."""

    def abandon(self, messages: Sequence[ReceivedMessage]) -> list[ReceivedMessage]:
        """Release the messages for redelivery now; returns those whose lock was lost."""

    def dead_letter(self, message: ReceivedMessage, reason: str, description: str) -> bool:
        """Move the message to the dead-letter sub-queue; False when its lock was lost."""

    def close(self) -> None: ...


class Bus(Protocol):
    """A namespace of queues: Service Bus (servicebus.py) or the local bus (local_bus.py)."""

    def receiver(self, queue: str) -> Receiver: ...

    def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        """Send all of ``messages`` or raise; a duplicate ``message_id`` is dropped silently."""

    def peek(self, queue: str, max_count: int) -> list[ReceivedMessage]:
        """Browse the queue's messages from the oldest, without locking them."""

    def dead_letters(self, queue: str, max_count: int) -> list[ReceivedMessage]:
        """Browse the dead-letter sub-queue, with each message's reason and description."""

    def resubmit_dead_letters(self, queue: str, max_count: int) -> int:
        """Move up to ``max_count`` dead letters back to the queue; returns how many moved."""

    def active_message_counts(self) -> dict[str, int] | None:
        """Messages waiting (not locked, not scheduled) in each queue of the namespace that
        holds any; None when this bus cannot list its queues (Service Bus without the Manage
        right). The bridge reports the queues no route reads (unrouted.py)."""

    def close(self) -> None: ...
