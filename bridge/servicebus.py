"""Azure Service Bus behind the bus interface (bus.py), with the azure-servicebus SDK.

One long-lived :class:`ServiceBusClient` (from a connection string, or a namespace and
``DefaultAzureCredential``); per queue one PEEK_LOCK receiver with prefetch, and one sender.
Every received message is registered with an ``AutoLockRenewer`` until it is settled, so a
batch whose publish is slow keeps its locks. A connection failure closes only the receiver or
sender that failed and raises :class:`BusUnavailable`; the next call opens a new one on the same
client (the older handler built a new client for every poll).

Prefetched messages are locked from the moment they are prefetched, before the renewer knows
them: keep ``BRIDGE_PREFETCH`` near the batch size, so none sits out its lock in the buffer while
the ingress is paused for back-pressure.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from azure.core.exceptions import AzureError
from azure.servicebus import (
    AutoLockRenewer,
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.amqp import AmqpMessageBodyType
from azure.servicebus.exceptions import (
    MessageLockLostError,
    MessageSizeExceededError,
    OperationTimeoutError,
    ServiceBusCommunicationError,
    ServiceBusConnectionError,
    ServiceBusError,
    ServiceBusServerBusyError,
)
from azure.servicebus.management import ServiceBusAdministrationClient

from bridge.bus_api import OutgoingMessage, PropertyValue, ReceivedMessage
from bridge.errors import BusError, BusUnavailable, MessageTooLarge
from settings import get_logger

if TYPE_CHECKING:
    from settings import Settings

log = get_logger(__name__)

# The SDK's default: a message still unsettled after this long is let go (the bridge settles a
# batch in milliseconds; only a broker outage keeps one longer).
LOCK_RENEWAL_MAX_SECS = 300.0
# The SDK takes no zero wait (None means up to 60 s): the shortest wait a receive asks for.
MIN_RECEIVE_WAIT_SECS = 0.1
# How long resubmitting waits for dead letters to arrive from the dead-letter sub-queue.
DEAD_LETTER_RECEIVE_WAIT_SECS = 5.0
# Failures that pass: the namespace is unreachable or busy now.
_TRANSIENT = (
    ServiceBusConnectionError,
    ServiceBusCommunicationError,
    OperationTimeoutError,
    ServiceBusServerBusyError,
)


def _text(value: Any) -> Any:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _body_text(message: Any) -> tuple[str, str | None]:
    """The body as text, and why it could not be, if it could not: an AMQP value body is
    converted to JSON, which recurses once per nesting level, and a sender chooses the depth."""
    body = message.body
    if message.body_type == AmqpMessageBodyType.DATA:
        body = b"".join(body)
    body = _text(body)
    if isinstance(body, str):
        return body, None
    try:
        return json.dumps(body, default=str), None
    except (RecursionError, ValueError, TypeError) as error:
        return "", f"is an AMQP value body that cannot be written as JSON ({type(error).__name__})"


def _received(message: Any, lock: object = None) -> ReceivedMessage:
    # A sender may leave message_id unset; the sequence number is as stable across
    # redeliveries, so the task id derived from it is too.
    message_id = message.message_id or f"sequence-{message.sequence_number}"
    properties = message.application_properties or {}
    body, unreadable = _body_text(message)
    return ReceivedMessage(
        body=body,
        unreadable=unreadable,
        message_id=str(message_id),
        correlation_id=message.correlation_id,
        sequence_number=message.sequence_number,
        delivery_count=message.delivery_count or 0,
        application_properties={_text(k): _text(v) for k, v in properties.items()},
        enqueued_time=message.enqueued_time_utc,
        dead_letter_reason=message.dead_letter_reason,
        dead_letter_description=message.dead_letter_error_description,
        lock=lock,
    )


def _sdk_properties(properties: Mapping[str, PropertyValue]) -> dict[str | bytes, Any] | None:
    """The SDK's type for application properties (it also takes bytes keys); None when empty."""
    return {key: value for key, value in properties.items()} or None


def _outgoing(message: OutgoingMessage) -> ServiceBusMessage:
    return ServiceBusMessage(
        message.body,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        application_properties=_sdk_properties(message.application_properties),
        scheduled_enqueue_time_utc=message.scheduled_enqueue_time,
        content_type="application/json",
    )


@contextmanager
def _mapped_errors(on_unavailable: Callable[[], None] = lambda: None) -> Iterator[None]:
    """SDK errors as bus errors: the one place the bridge meets azure-servicebus's errors.
    ``on_unavailable`` drops the handler that failed, so the next call opens a fresh one."""
    try:
        yield
    except _TRANSIENT as error:
        on_unavailable()
        raise BusUnavailable(f"Service Bus unreachable: {error}") from error
    except ServiceBusError as error:
        raise BusError(f"Service Bus refused the operation: {error}") from error


class ServiceBus:
    """A Service Bus namespace. Thread-safe: each receiver belongs to one thread, and senders
    are created under a lock and used by the egress thread or the CLI."""

    def __init__(
        self,
        client: ServiceBusClient,
        *,
        prefetch: int = 0,
        lock_renewer: AutoLockRenewer | None = None,
        admin: ServiceBusAdministrationClient | None = None,
    ) -> None:
        self.client = client
        self.prefetch = prefetch
        # Lists the namespace's queues (active_message_counts); needs the Manage right, which
        # a bridge may well not have: then it is dropped at the first refusal.
        self.admin = admin
        self.lock_renewer = lock_renewer or AutoLockRenewer(
            max_lock_renewal_duration=LOCK_RENEWAL_MAX_SECS
        )
        self._senders: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceBus:
        if settings.service_bus_connection_string:
            connection_string = settings.service_bus_connection_string.get_secret_value()
            client = ServiceBusClient.from_connection_string(connection_string)
            admin = ServiceBusAdministrationClient.from_connection_string(connection_string)
        else:
            from azure.identity import DefaultAzureCredential

            namespace = settings.service_bus_namespace or ""
            if "." not in namespace:
                namespace += ".servicebus.windows.net"
            credential = DefaultAzureCredential()
            client = ServiceBusClient(namespace, credential)
            admin = ServiceBusAdministrationClient(namespace, credential)
        return cls(client, prefetch=settings.bridge_prefetch, admin=admin)

    def receiver(self, queue: str) -> ServiceBusQueueReceiver:
        return ServiceBusQueueReceiver(self, queue)

    def open_receiver(self, queue: str, **options: Any) -> Any:
        with self._lock, _mapped_errors():
            return self.client.get_queue_receiver(
                queue, receive_mode=ServiceBusReceiveMode.PEEK_LOCK, **options
            )

    def _sender(self, queue: str) -> Any:
        with self._lock:
            if queue not in self._senders:
                with _mapped_errors():
                    self._senders[queue] = self.client.get_queue_sender(queue)
            return self._senders[queue]

    def _drop_sender(self, queue: str) -> None:
        with self._lock:
            sender = self._senders.pop(queue, None)
        if sender is not None:
            _close_quietly(sender)

    def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        sender = self._sender(queue)
        with _mapped_errors(lambda: self._drop_sender(queue)):
            batch = sender.create_message_batch()
            for message in messages:
                try:
                    batch.add_message(_outgoing(message))
                except MessageSizeExceededError as error:
                    if not len(batch):  # this one message alone is over the limit
                        raise MessageTooLarge(
                            message.message_id,
                            (
                                "Service Bus refused it as over the namespace's limit of "
                                f"{batch.max_size_in_bytes} bytes"
                            ),
                        ) from error
                    sender.send_messages(batch)
                    batch = sender.create_message_batch()
                    batch.add_message(_outgoing(message))
            sender.send_messages(batch)

    def peek(self, queue: str, max_count: int) -> list[ReceivedMessage]:
        receiver = self.open_receiver(queue)
        try:
            with _mapped_errors():
                return [_received(m) for m in receiver.peek_messages(max_message_count=max_count)]
        finally:
            _close_quietly(receiver)

    def dead_letters(self, queue: str, max_count: int) -> list[ReceivedMessage]:
        receiver = self.open_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER)
        try:
            with _mapped_errors():
                return [_received(m) for m in receiver.peek_messages(max_message_count=max_count)]
        finally:
            _close_quietly(receiver)

    def resubmit_dead_letters(self, queue: str, max_count: int) -> int:
        """Send a copy of each dead letter to the queue, then complete the dead letter: a crash
        in between leaves a copy in both, never in neither. (A message id the queue saw within
        its duplicate detection window is dropped by Service Bus.)"""
        receiver = self.open_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER)
        try:
            with _mapped_errors():
                dead = receiver.receive_messages(
                    max_message_count=max_count, max_wait_time=DEAD_LETTER_RECEIVE_WAIT_SECS
                )
            copies = [_received(m) for m in dead]
            self.send(
                queue,
                [
                    OutgoingMessage(
                        body=copy.body,
                        message_id=copy.message_id,
                        correlation_id=copy.correlation_id,
                        application_properties=copy.application_properties,
                    )
                    for copy in copies
                ],
            )
            with _mapped_errors():
                for message in dead:
                    receiver.complete_message(message)
            return len(dead)
        finally:
            _close_quietly(receiver)

    def active_message_counts(self) -> dict[str, int] | None:
        if self.admin is None:
            return None
        try:
            return {
                queue.name: queue.active_message_count
                for queue in self.admin.list_queues_runtime_properties()
                if queue.active_message_count
            }
        except AzureError as error:
            # Most often the Manage right is missing: say so once, and stop asking.
            log.warning(
                "cannot list the namespace's queues (%s: %s); queues with messages and no "
                "route will not be reported (this needs the Manage right)",
                type(error).__name__,
                " ".join(str(error).split())[:300],
            )
            admin, self.admin = self.admin, None
            _close_quietly(admin)
            return None

    def close(self) -> None:
        if self.admin is not None:
            _close_quietly(self.admin)
        self.lock_renewer.close()
        with self._lock:
            senders, self._senders = list(self._senders.values()), {}
        for sender in senders:
            _close_quietly(sender)
        self.client.close()


def _close_quietly(handler: Any) -> None:
    """Close a handler that may already be broken: its failure was reported when it broke."""
    try:
        handler.close()
    except (ServiceBusError, ValueError, OSError):
        pass


class ServiceBusQueueReceiver:
    """A PEEK_LOCK receiver on one queue; reopened after a connection failure."""

    def __init__(self, bus: ServiceBus, queue: str) -> None:
        self.bus, self.queue = bus, queue
        self._receiver: Any = None

    def _drop(self) -> None:
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            _close_quietly(receiver)

    def receive(self, max_count: int, max_wait_s: float) -> list[ReceivedMessage]:
        if self._receiver is None:
            self._receiver = self.bus.open_receiver(self.queue, prefetch_count=self.bus.prefetch)
        receiver = self._receiver
        with _mapped_errors(self._drop):
            messages = receiver.receive_messages(
                max_message_count=max_count, max_wait_time=max(max_wait_s, MIN_RECEIVE_WAIT_SECS)
            )
        for message in messages:
            self.bus.lock_renewer.register(
                receiver, message, max_lock_renewal_duration=LOCK_RENEWAL_MAX_SECS
            )
        return [_received(message, lock=(receiver, message)) for message in messages]

    def _settle(
        self, messages: Sequence[ReceivedMessage], settle: Callable[[Any, Any], None]
    ) -> list[ReceivedMessage]:
        lost = []
        for message in messages:
            receiver, sdk_message = cast(tuple[Any, Any], message.lock)
            with _mapped_errors(self._drop):
                try:
                    settle(receiver, sdk_message)
                except MessageLockLostError:
                    lost.append(message)
                except ValueError:
                    # Received on a receiver since closed (after a connection failure): its
                    # lock went with it, and Service Bus delivers the message again.
                    lost.append(message)
        return lost

    def complete(self, messages: Sequence[ReceivedMessage]) -> list[ReceivedMessage]:
        return self._settle(messages, lambda receiver, m: receiver.complete_message(m))

    def abandon(self, messages: Sequence[ReceivedMessage]) -> list[ReceivedMessage]:
        return self._settle(messages, lambda receiver, m: receiver.abandon_message(m))

    def dead_letter(self, message: ReceivedMessage, reason: str, description: str) -> bool:
        return not self._settle(
            [message],
            lambda receiver, m: receiver.dead_letter_message(
                m, reason=reason, error_description=description
            ),
        )

    def close(self) -> None:
        self._drop()
