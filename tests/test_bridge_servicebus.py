"""The Service Bus adapter, and the ingress on top of it, against fakes of the azure-servicebus
receiver, sender and client: the methods the adapter calls, with the SDK's own exceptions."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessageBatch,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.amqp import AmqpMessageBodyType
from azure.servicebus.exceptions import MessageLockLostError, ServiceBusConnectionError

from bridge.bus import OutgoingMessage, connect_bus
from bridge.egress import Egress
from bridge.errors import BrokerUnavailable, BusUnavailable, MessageTooLarge
from bridge.ingress import Ingress
from bridge.metrics import Counters
from bridge.servicebus import ServiceBus
from settings import Route, load_settings
from settings.jsonsafe import DEFAULT_MAX_DEPTH
from tasks.outbox import write_result

_sequence = itertools.count(1)


class FakeSdkMessage:
    """Shaped like ServiceBusReceivedMessage: a DATA body yielded in sections, bytes keys."""

    def __init__(
        self,
        body: str,
        message_id: str | None,
        delivery_count: int = 1,
        properties: dict[bytes, bytes] | None = None,
    ) -> None:
        self._body = body.encode()
        self.body_type = AmqpMessageBodyType.DATA
        self.message_id = message_id
        self.correlation_id = None
        self.sequence_number = next(_sequence)
        self.delivery_count = delivery_count
        self.application_properties = properties
        self.enqueued_time_utc = datetime.now(UTC)
        self.dead_letter_reason: str | None = None
        self.dead_letter_error_description: str | None = None

    @property
    def body(self):
        return iter([self._body])


@dataclass
class FakeNamespace:
    """The queues the fakes share, and the failures a test asks for."""

    queues: dict[str, list[FakeSdkMessage]] = field(default_factory=dict)
    dead: dict[str, list[FakeSdkMessage]] = field(default_factory=dict)
    # Message ids as the SDK has them: None for a message sent without one.
    completed: list[str | None] = field(default_factory=list)
    abandoned: list[str | None] = field(default_factory=list)
    sent: dict[str, list[Any]] = field(default_factory=dict)
    lock_lost_ids: set[str] = field(default_factory=set)
    fail_next_receive: Exception | None = None
    receivers: list[FakeReceiver] = field(default_factory=list)
    max_batch_bytes: int = 1024 * 1024


class FakeReceiver:
    def __init__(self, namespace: FakeNamespace, queue: str, options: dict[str, Any]) -> None:
        self.namespace, self.queue, self.options = namespace, queue, options
        self.closed = False

    def _source(self) -> list[FakeSdkMessage]:
        if self.options.get("sub_queue") == ServiceBusSubQueue.DEAD_LETTER:
            return self.namespace.dead.setdefault(self.queue, [])
        return self.namespace.queues.setdefault(self.queue, [])

    def receive_messages(self, max_message_count: int, max_wait_time: float):
        assert max_wait_time > 0
        if self.namespace.fail_next_receive is not None:
            error, self.namespace.fail_next_receive = self.namespace.fail_next_receive, None
            raise error
        source = self._source()
        taken, source[:max_message_count] = source[:max_message_count], []
        return taken

    def peek_messages(self, max_message_count: int):
        return self._source()[:max_message_count]

    def _settle(self, message: FakeSdkMessage, into: list[str | None]) -> None:
        if self.closed:
            raise ValueError("The handler has already been shutdown.")
        if message.message_id in self.namespace.lock_lost_ids:
            raise MessageLockLostError(message="The lock on the message lock has expired.")
        into.append(message.message_id)

    def complete_message(self, message: FakeSdkMessage) -> None:
        self._settle(message, self.namespace.completed)

    def abandon_message(self, message: FakeSdkMessage) -> None:
        self._settle(message, self.namespace.abandoned)

    def dead_letter_message(
        self,
        message: FakeSdkMessage,
        reason: str | None = None,
        error_description: str | None = None,
    ) -> None:
        self._settle(message, [])
        message.dead_letter_reason, message.dead_letter_error_description = (
            reason,
            error_description,
        )
        self.namespace.dead.setdefault(self.queue, []).append(message)

    def close(self) -> None:
        self.closed = True


class FakeSender:
    def __init__(self, namespace: FakeNamespace, queue: str) -> None:
        self.namespace, self.queue = namespace, queue

    def create_message_batch(self) -> ServiceBusMessageBatch:
        return ServiceBusMessageBatch(max_size_in_bytes=self.namespace.max_batch_bytes)

    def send_messages(self, batch: ServiceBusMessageBatch) -> None:
        self.namespace.sent.setdefault(self.queue, []).append(list(batch._messages))

    def close(self) -> None:
        pass


class FakeClient:
    def __init__(self, namespace: FakeNamespace) -> None:
        self.namespace = namespace
        self.closed = False

    def get_queue_receiver(
        self, queue_name: str, *, receive_mode: ServiceBusReceiveMode, **options: Any
    ) -> FakeReceiver:
        assert receive_mode == ServiceBusReceiveMode.PEEK_LOCK
        receiver = FakeReceiver(self.namespace, queue_name, options)
        self.namespace.receivers.append(receiver)
        return receiver

    def get_queue_sender(self, queue_name: str) -> FakeSender:
        return FakeSender(self.namespace, queue_name)

    def close(self) -> None:
        self.closed = True


class FakeRenewer:
    """Stands in for AutoLockRenewer, which accepts only the SDK's own message class."""

    def __init__(self) -> None:
        self.registered: list[tuple[FakeReceiver, FakeSdkMessage]] = []
        self.closed = False

    def register(self, receiver, renewable, max_lock_renewal_duration=None) -> None:
        self.registered.append((receiver, renewable))

    def close(self) -> None:
        self.closed = True


class FakePublisher:
    """The ingress's view of Celery: records what was published, or fails like a dead broker."""

    def __init__(self) -> None:
        self.published: list[Any] = []
        self.fail = False

    def publish(self, requests, traces=None) -> None:
        if self.fail:
            raise BrokerUnavailable("publishing failed: Connection refused")
        self.published += requests

    def backlog(self, queue: str) -> int:
        return 0


class FakeLedger:
    def __init__(self) -> None:
        self.recorded: list[Any] = []

    def record(self, requests) -> None:
        self.recorded += requests


@pytest.fixture
def namespace() -> FakeNamespace:
    return FakeNamespace()


@pytest.fixture
def bus(namespace):
    bus = ServiceBus(
        FakeClient(namespace),  # type: ignore[arg-type]  # the SDK's client, faked: what the adapter calls
        prefetch=64,
        lock_renewer=FakeRenewer(),  # type: ignore[arg-type]  # the SDK's renewer, faked likewise
    )
    yield bus
    bus.close()


def put(namespace: FakeNamespace, queue: str, *bodies: str, **fields) -> None:
    namespace.queues.setdefault(queue, []).extend(
        FakeSdkMessage(body, f"m-{i}", **fields) for i, body in enumerate(bodies)
    )


def test_received_messages_are_converted_and_their_locks_renewed(bus, namespace):
    put(namespace, "form_iq", '{"id": 1}', properties={b"app": b"forms"}, delivery_count=2)
    [message] = bus.receiver("form_iq").receive(32, 1.0)
    assert message.body == '{"id": 1}' and message.message_id == "m-0"
    assert message.application_properties == {"app": "forms"}
    assert message.delivery_count == 2
    [receiver] = namespace.receivers
    assert receiver.options == {"prefetch_count": 64}
    assert [m.message_id for _, m in bus.lock_renewer.registered] == ["m-0"]


def test_a_message_without_id_gets_one_from_its_sequence_number(bus, namespace):
    namespace.queues["q"] = [FakeSdkMessage("{}", None)]
    [message] = bus.receiver("q").receive(1, 1.0)
    assert message.message_id == f"sequence-{message.sequence_number}"


def test_settling_reports_lost_locks_instead_of_failing(bus, namespace):
    put(namespace, "q", "{}", "{}", "{}")
    namespace.lock_lost_ids = {"m-1"}
    receiver = bus.receiver("q")
    kept, lost, abandoned = receiver.receive(3, 1.0)
    assert receiver.complete([kept, lost]) == [lost]
    assert receiver.abandon([abandoned]) == []
    assert namespace.completed == ["m-0"] and namespace.abandoned == ["m-2"]


def test_a_connection_error_reopens_the_receiver_on_the_same_client(bus, namespace):
    put(namespace, "q", "{}")
    receiver = bus.receiver("q")
    namespace.fail_next_receive = ServiceBusConnectionError(message="connection reset")
    with pytest.raises(BusUnavailable, match="connection reset"):
        receiver.receive(1, 1.0)
    [message] = receiver.receive(1, 1.0)
    first, second = namespace.receivers
    assert first.closed and not second.closed
    assert receiver.complete([message]) == []
    # A message received before the failure: its lock went with the closed receiver.
    stale = replace(message, lock=(first, FakeSdkMessage("{}", "old")))
    assert receiver.complete([stale]) == [stale]


def test_send_sets_ids_and_splits_batches_that_would_be_too_large(bus, namespace):
    namespace.max_batch_bytes = 600
    bus.send(
        "out",
        [
            OutgoingMessage(
                body=json.dumps({"n": i, "pad": "x" * 200}),
                message_id=f"task-{i}",
                correlation_id=f"m-{i}",
            )
            for i in range(4)
        ],
    )
    batches = namespace.sent["out"]
    assert len(batches) > 1
    messages = [m for batch in batches for m in batch]
    assert [m.message_id for m in messages] == [f"task-{i}" for i in range(4)]
    assert [m.correlation_id for m in messages] == [f"m-{i}" for i in range(4)]
    assert json.loads(str(messages[0]))["n"] == 0
    assert messages[0].content_type == "application/json"


def test_a_message_alone_over_the_limit_is_refused_as_too_large(bus, namespace):
    namespace.max_batch_bytes = 600
    with pytest.raises(MessageTooLarge, match="namespace's limit of 600 bytes") as refused:
        bus.send("out", [OutgoingMessage(body="x" * 1000, message_id="task-1")])
    assert refused.value.message_id == "task-1"


def test_egress_sends_the_failure_payload_of_a_result_service_bus_refuses(
    bus, namespace, redis_client
):
    # A standard-tier namespace under a bridge whose limit was raised for premium.
    namespace.max_batch_bytes = 4096
    egress = Egress(
        redis_client,
        bus,
        ["out"],
        "bridge-1",
        Counters(),
        batch_size=10,
        reclaim_idle_s=60,
        max_message_bytes=1024 * 1024,
    )
    egress.ensure_groups()
    write_result(redis_client, "out", "task-big", "m-big", {"id": "big", "pad": "x" * 5000})
    write_result(redis_client, "out", "task-small", "m-small", {"id": "small"})

    assert egress.run_once() == 0  # refused by the SDK: nothing acknowledged
    assert egress.run_once() == 2

    sent = [m for batch in namespace.sent["out"] for m in batch]
    failed, small = (json.loads(str(m)) for m in sent)
    assert failed == {
        "id": "big",
        "taskId": None,
        "message": "failed",
        "error": {
            "type": "ResultTooLarge",
            "detail": "Service Bus refused it as over the namespace's limit of 4096 bytes",
        },
    }
    assert small == {"id": "small"}
    assert [m.message_id for m in sent] == ["task-big", "task-small"]
    assert egress.counters.take()[("out", "too_large")] == 1


def test_dead_letters_are_listed_and_resubmitted_as_copies(bus, namespace):
    put(namespace, "q", "not json")
    receiver = bus.receiver("q")
    [message] = receiver.receive(1, 1.0)
    assert receiver.dead_letter(message, "MalformedJson", "body is not valid JSON")
    [dead] = bus.dead_letters("q", 10)
    assert (dead.dead_letter_reason, dead.dead_letter_description) == (
        "MalformedJson",
        "body is not valid JSON",
    )
    assert bus.resubmit_dead_letters("q", 10) == 1
    [[copy]] = namespace.sent["q"]
    assert str(copy) == "not json" and copy.message_id == "m-0"
    assert namespace.completed == ["m-0"]  # the dead letter, completed after the copy was sent


def echo_ingress(bus, publisher: FakePublisher) -> Ingress:
    """The echo route's ingress over the Service Bus adapter, publishing to ``publisher``."""
    return Ingress(
        Route.parse("echo_iq:echo:echo_oq"),
        bus.receiver("echo_iq"),
        publisher,  # type: ignore[arg-type]  # a fake publisher: records, or fails on demand
        FakeLedger(),  # type: ignore[arg-type]  # a fake ledger: Redis is not the point here
        Counters(),
        batch_size=32,
        high_water=10,
        max_idle_s=1.0,
        celery_queue="echo",
        max_message_bytes=256 * 1024,
        max_json_depth=DEFAULT_MAX_DEPTH,
    )


def test_ingress_completes_only_what_it_published_and_dead_letters_the_rest(bus, namespace):
    put(namespace, "echo_iq", '{"id": "a"}', "not json", '{"no_id": true}', '{"id": "b"}')
    publisher = FakePublisher()
    ingress = echo_ingress(bus, publisher)
    assert ingress.run_once() == 4
    assert [r.message_id for r in publisher.published] == ["m-0", "m-3"]
    assert namespace.completed == ["m-0", "m-3"]
    reasons = {m.message_id: m.dead_letter_reason for m in namespace.dead["echo_iq"]}
    assert reasons == {"m-1": "MalformedJson", "m-2": "InvalidFields"}
    assert "'id'" in namespace.dead["echo_iq"][1].dead_letter_error_description


def test_ingress_abandons_the_batch_when_the_broker_fails(bus, namespace):
    put(namespace, "echo_iq", '{"id": "a"}', '{"id": "b"}')
    publisher = FakePublisher()
    publisher.fail = True
    ingress = echo_ingress(bus, publisher)
    with pytest.raises(BrokerUnavailable):
        ingress.run_once()
    assert namespace.completed == [] and namespace.abandoned == ["m-0", "m-1"]


CONNECTION_STRING = (
    "Endpoint=sb://conduit.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=c2VjcmV0"
)


@pytest.mark.parametrize(
    "overrides",
    [{"service_bus_connection_string": CONNECTION_STRING}, {"service_bus_namespace": "conduit"}],
)
def test_settings_choose_service_bus_by_connection_string_or_namespace(overrides):
    bus = connect_bus(load_settings(**overrides))
    try:
        assert isinstance(bus, ServiceBus) and isinstance(bus.client, ServiceBusClient)
        assert bus.client.fully_qualified_namespace == "conduit.servicebus.windows.net"
    finally:
        bus.close()


class FakeValueMessage(FakeSdkMessage):
    """A message sent with an AMQP value body (not data): the SDK hands over the value."""

    def __init__(self, value: Any, message_id: str) -> None:
        super().__init__("", message_id)
        self.body_type = AmqpMessageBodyType.VALUE
        self._value = value

    @property
    def body(self):
        return self._value


def test_an_amqp_value_too_deep_for_json_is_dead_lettered_alone(bus, namespace):
    # Converting the value to JSON text recursed past Python's limit inside receive(), where no
    # per-message guard is: the exception stopped the route's thread, and so the bridge.
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    namespace.queues["echo_iq"] = [
        FakeValueMessage({"id": "a"}, "m-value"),
        FakeValueMessage(deep, "m-deep"),
    ]
    publisher = FakePublisher()
    ingress = echo_ingress(bus, publisher)
    assert ingress.run_once() == 2
    assert [r.message_id for r in publisher.published] == ["m-value"]
    [dead] = namespace.dead["echo_iq"]
    assert (dead.message_id, dead.dead_letter_reason) == ("m-deep", "MalformedJson")
    assert "AMQP value body" in dead.dead_letter_error_description
