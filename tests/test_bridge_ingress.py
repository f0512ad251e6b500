"""The ingress against a real Redis (local bus, Celery broker, ledger): one poisoned message is
dead-lettered alone, with its reason, and the rest of its batch goes through."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from kombu.exceptions import EncodeError

from bridge.bus_api import OutgoingMessage
from bridge.celery_publisher import CeleryPublisher
from bridge.ingress import Ingress
from bridge.ledger import Ledger, ledger_key
from bridge.local_bus import LocalBus
from bridge.metrics import Counters
from bridge.routing import TaskRequest
from settings import Route
from tasks.processors import task_id_for

ROUTE = Route.parse("echo_iq:echo:echo_oq")
# Issue 10.10's message: a valid echo message, about 1 KB, 500 levels deep in an extra field.
NESTED_500 = '{"id": "deep", "extra": ' + "[" * 500 + "]" * 500 + "}"


def make_ingress(bus: LocalBus, publisher: CeleryPublisher, ledger: Ledger) -> Ingress:
    return Ingress(
        ROUTE,
        bus.receiver(ROUTE.in_queue),
        publisher,
        ledger,
        Counters(),
        batch_size=10,
        high_water=1000,
        max_idle_s=1,
        celery_queue="echo",
        max_message_bytes=64 * 1024,
        max_json_depth=32,
    )


@pytest.fixture
def bus(redis_client):
    return LocalBus(redis_client, lock_duration_s=30)


def published_ids(redis_client) -> set[str]:
    return {json.loads(m)["headers"]["id"] for m in redis_client.lrange("echo", 0, -1)}


def send(bus: LocalBus, bodies: dict[str, str]) -> None:
    bus.send(
        ROUTE.in_queue,
        [OutgoingMessage(body=body, message_id=name) for name, body in bodies.items()],
    )


def dead_letters(bus: LocalBus) -> dict[str, tuple[str | None, str | None]]:
    return {
        m.message_id: (m.dead_letter_reason, m.dead_letter_description)
        for m in bus.dead_letters(ROUTE.in_queue, 10)
    }


def test_a_deeply_nested_message_is_dead_lettered_alone(bus, celery_app, redis_client):
    send(bus, {"good-1": '{"id": "1"}', "deep": NESTED_500, "good-2": '{"id": "2"}'})
    ingress = make_ingress(bus, CeleryPublisher(celery_app), Ledger(redis_client))

    assert ingress.run_once() == 3  # no exception escapes the batch

    assert dead_letters(bus) == {
        "deep": (
            "MalformedJson",
            "body is nested deeper than 32 levels (BRIDGE_MAX_JSON_DEPTH)",
        )
    }
    assert len(published_ids(redis_client)) == 2
    assert redis_client.zcard(ledger_key("echo_oq")) == 2
    assert bus.peek(ROUTE.in_queue, 10) == []  # the good ones completed, none left locked
    assert ingress.counters.take() == {
        ("echo_iq", "received"): 3,
        ("echo_iq", "dead_lettered"): 1,
        ("echo_iq", "published"): 2,
    }


def test_an_oversized_body_and_bare_nan_are_dead_lettered_with_their_reason(
    bus, celery_app, redis_client
):
    send(bus, {"big": json.dumps({"id": "big", "pad": "x" * 70_000}), "nan": '{"id": NaN}'})
    ingress = make_ingress(bus, CeleryPublisher(celery_app), Ledger(redis_client))

    ingress.run_once()

    reasons = dead_letters(bus)
    assert reasons["big"] == (
        "MessageTooLarge",
        "body is over the limit of 65536 bytes (BRIDGE_MAX_MESSAGE_BYTES)",
    )
    assert reasons["nan"][0] == "MalformedJson"
    assert "body holds NaN, which is not JSON" in (reasons["nan"][1] or "")


class FailsOnOne(CeleryPublisher):
    """Fault injection: a publish that fails, not for the broker's sake, on one message only
    (what a body kombu cannot serialise would do)."""

    def __init__(self, app, poisoned_task_id: str) -> None:
        super().__init__(app)
        self.poisoned_task_id = poisoned_task_id

    def publish(self, requests: Sequence[TaskRequest], traces=None) -> None:
        if any(request.task_id == self.poisoned_task_id for request in requests):
            raise TypeError("Object of type bytes is not JSON serializable")
        super().publish(requests, traces)


def test_an_unexpected_error_in_a_batch_is_pinned_on_its_message(bus, celery_app, redis_client):
    send(bus, {f"m-{i}": json.dumps({"id": str(i)}) for i in range(5)})
    publisher = FailsOnOne(celery_app, task_id_for(ROUTE.in_queue, "m-3"))
    ingress = make_ingress(bus, publisher, Ledger(redis_client))

    assert ingress.run_once() == 5

    assert dead_letters(bus) == {
        "m-3": (
            "UnhandledError",
            "TypeError while publishing: Object of type bytes is not JSON serializable",
        )
    }
    assert len(published_ids(redis_client)) == 4
    # The poisoned message's ledger record is gone with it: nothing will republish it.
    assert redis_client.zcard(ledger_key("echo_oq")) == 4
    assert bus.peek(ROUTE.in_queue, 10) == []


def test_a_body_kombu_cannot_serialise_is_not_a_broker_failure(celery_app):
    # A broker failure abandons the whole batch for redelivery; this would fail again each
    # time, so it must reach the ingress as the one message's own error.
    request = TaskRequest(
        task_name="processors.echo",
        queue="echo",
        task_id="t-1",
        body={"id": "1", "unserialisable": object()},
        out_queue="echo_oq",
        message_id="m-1",
    )
    with pytest.raises(EncodeError):
        CeleryPublisher(celery_app).publish([request])
