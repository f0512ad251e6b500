"""Queues holding messages no route reads are reported (log and dashboard stats), on the local
bus against a real Redis, and on Service Bus through its management client."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from azure.core.exceptions import ClientAuthenticationError

from bridge.bus_api import OutgoingMessage
from bridge.local_bus import LocalBus
from bridge.metrics import read_bridge_stats
from bridge.servicebus import ServiceBus
from bridge.unrouted import UnroutedReporter, unrouted_queues
from settings import Route

ROUTES = [Route.parse("form_iq:feedback:form_oq")]


def send(bus: LocalBus, queue: str, count: int) -> None:
    bus.send(queue, [OutgoingMessage(body="{}", message_id=f"{queue}-{i}") for i in range(count)])


def test_only_queues_no_route_reads_or_writes_are_unrouted():
    counts = {"form_iq": 4, "form_oq": 9, "typo_iq": 2, "empty_iq": 0}
    assert unrouted_queues(counts, ROUTES) == {"typo_iq": 2}


def test_a_message_on_a_queue_with_no_route_shows_in_the_bridge_stats_and_the_log(
    redis_client, caplog
):
    bus = LocalBus(redis_client)
    send(bus, "form_iq", 1)  # routed: the ingress will take it
    send(bus, "form_oq", 3)  # results waiting for their reader: not a stray
    send(bus, "from_iq", 2)  # a typo of the sender's: sits there for ever
    assert read_bridge_stats(redis_client)["unrouted"] == {"checked_at": None, "queues": []}

    reporter = UnroutedReporter(bus, redis_client, ROUTES)
    with caplog.at_level(logging.WARNING, logger="bridge.unrouted"):
        assert reporter.check() == {"from_iq": 2}

    unrouted = read_bridge_stats(redis_client)["unrouted"]
    assert unrouted["queues"] == [{"queue": "from_iq", "messages": 2}]
    assert unrouted["checked_at"] is not None
    assert "messages wait in queue(s) no route reads: from_iq (2)" in caplog.text

    # Once it is drained, the next check clears the report.
    bus.receiver("from_iq").complete(bus.receiver("from_iq").receive(10, 0))
    assert reporter.check() == {}
    assert read_bridge_stats(redis_client)["unrouted"]["queues"] == []


class FakeAdmin:
    """Shaped like ServiceBusAdministrationClient's listing; ``refuse`` as without Manage."""

    def __init__(self, counts: dict[str, int], refuse: bool = False) -> None:
        self.counts, self.refuse, self.calls, self.closed = counts, refuse, 0, False

    def list_queues_runtime_properties(self):
        self.calls += 1
        if self.refuse:
            raise ClientAuthenticationError("Unauthorized: Manage claim required")
        return iter(
            SimpleNamespace(name=name, active_message_count=n) for name, n in self.counts.items()
        )

    def close(self) -> None:
        self.closed = True


def test_service_bus_lists_its_queues_with_the_management_client():
    bus = ServiceBus(SimpleNamespace(), admin=FakeAdmin({"form_iq": 0, "typo_iq": 5}))
    assert bus.active_message_counts() == {"typo_iq": 5}


def test_service_bus_without_the_manage_right_says_so_once_and_stops_asking(caplog):
    admin = FakeAdmin({}, refuse=True)
    bus = ServiceBus(SimpleNamespace(), admin=admin)
    with caplog.at_level(logging.WARNING, logger="bridge.servicebus"):
        assert bus.active_message_counts() is None
        assert bus.active_message_counts() is None
    assert admin.calls == 1 and admin.closed
    assert caplog.text.count("this needs the Manage right") == 1


def test_a_bus_that_cannot_list_its_queues_reports_nothing(redis_client):
    class Unlisted:
        def active_message_counts(self) -> None:
            return None

    assert UnroutedReporter(Unlisted(), redis_client, ROUTES).check() is None
    assert read_bridge_stats(redis_client)["unrouted"]["queues"] == []
