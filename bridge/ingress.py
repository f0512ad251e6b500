"""Ingress: one route's messages, from its input queue into Celery, none lost.

For each batch received in peek-lock mode: route every message (routing.py) and dead-letter the
ones no retry could fix; record the rest in the ledger (ledger.py), then publish them as one
batch, each with ``task_id = task_id_for(in_queue, message_id)``; complete a message only after
both succeeded, and abandon the batch when the broker failed. Recording comes first because a
fast task can be answered (and forgotten by the egress) before a record made after publishing
would land, which would leave an entry no result ever clears. A crash
anywhere in between leaves messages locked, and the bus delivers them again when the locks
expire: publishing a message twice is harmless, since the task id is the same and a task writes
one result per id.

Receiving pauses while the processor's Celery queue holds more than ``BRIDGE_HIGH_WATER`` tasks,
so a backlog waits in the bus, not in Redis memory.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind

from bridge.bus_api import ReceivedMessage, Receiver
from bridge.celery_publisher import CeleryPublisher
from bridge.errors import BridgeError, BrokerUnavailable, BusUnavailable
from bridge.ledger import Ledger
from bridge.metrics import Counters
from bridge.routing import Rejection, TaskRequest, route_message, unhandled
from settings import Route, get_logger
from telemetry import context_from_carrier, tracer
from telemetry.tracing import tracing_enabled

log = get_logger(__name__)

# How often a paused route looks at its Celery queue again: workers drain tens of tasks a second.
BACKPRESSURE_RECHECK_SECS = 0.5
# After a bus or broker failure: soon enough to resume within a second of recovery, seldom
# enough that an outage logs one line a second per route.
FAILURE_RETRY_SECS = 1.0


class IdleWait:
    """How long the next receive may wait for a first message.

    The older handler slept 4 s after an empty poll, 1 s longer after each further one up to
    10 s, and 1 s once messages came. Here the wait is the receive's own long poll, which
    returns as soon as a message arrives, so a long wait costs no latency, only round trips
    saved while idle: 1 s while messages flow, +1 s per empty receive, up to the maximum.
    """

    BUSY_SECS = 1.0
    STEP_SECS = 1.0

    def __init__(self, max_s: float) -> None:
        self.max_s = max_s
        self.seconds = min(self.BUSY_SECS, max_s)

    def after(self, received: int) -> None:
        if received:
            self.seconds = min(self.BUSY_SECS, self.max_s)
        else:
            self.seconds = min(self.seconds + self.STEP_SECS, self.max_s)


class Ingress:
    """Moves one route's messages into Celery until told to stop, then finishes its batch."""

    def __init__(
        self,
        route: Route,
        receiver: Receiver,
        publisher: CeleryPublisher,
        ledger: Ledger,
        counters: Counters,
        *,
        batch_size: int,
        high_water: int,
        max_idle_s: float,
        celery_queue: str,
        max_message_bytes: int,
        max_json_depth: int,
    ) -> None:
        self.route, self.receiver, self.publisher, self.ledger, self.counters = (
            route,
            receiver,
            publisher,
            ledger,
            counters,
        )
        self.batch_size, self.high_water, self.celery_queue = batch_size, high_water, celery_queue
        self.max_message_bytes, self.max_json_depth = max_message_bytes, max_json_depth
        self.idle = IdleWait(max_idle_s)
        self.paused = False

    def run(self, stop: threading.Event) -> None:
        log.info(
            "ingress %s -> %s -> %s started",
            self.route.in_queue,
            self.route.processor,
            self.route.out_queue,
        )
        try:
            while not stop.is_set():
                try:
                    if self.over_high_water():
                        stop.wait(BACKPRESSURE_RECHECK_SECS)
                        continue
                    self.run_once()
                except (BusUnavailable, BrokerUnavailable) as error:
                    log.warning("route %s: %s; retrying", self.route.in_queue, error)
                    stop.wait(FAILURE_RETRY_SECS)
                except BridgeError as error:
                    log.error("route %s: %s", self.route.in_queue, error)
                    stop.wait(self.idle.max_s)
        finally:
            self.receiver.close()
            log.info("ingress %s stopped", self.route.in_queue)

    def over_high_water(self) -> bool:
        backlog = self.publisher.backlog(self.celery_queue)
        paused = backlog > self.high_water
        if paused != self.paused:
            log.warning(
                "route %s: %s receiving, Celery queue %r holds %d tasks (high water %d)",
                self.route.in_queue,
                "pausing" if paused else "resuming",
                self.celery_queue,
                backlog,
                self.high_water,
            )
            self.paused = paused
        return paused

    def run_once(self) -> int:
        """Receive one batch and see it through; returns how many messages it held."""
        batch = self.receiver.receive(self.batch_size, self.idle.seconds)
        self.idle.after(len(batch))
        if batch:
            self.counters.add(self.route.in_queue, "received", len(batch))
            self.handle(batch)
        return len(batch)

    def handle(self, batch: Sequence[ReceivedMessage]) -> None:
        """Route, record, publish and complete one batch. A message that fails in a way no
        check foresaw is dead-lettered alone (``UnhandledError``): no exception but the bus's
        or the broker's being unavailable leaves this method, so one poisoned message can never
        make the bridge exit and its batch come back, again and again, until every message of
        it is dead-lettered for its delivery count."""
        accepted: list[tuple[ReceivedMessage, TaskRequest]] = []
        spans: dict[str, Span] = {}
        for message in batch:
            try:
                outcome = route_message(
                    self.route,
                    message,
                    max_bytes=self.max_message_bytes,
                    max_depth=self.max_json_depth,
                )
            except Exception as error:  # noqa: BLE001 - one message's failure must stay its own
                outcome = unhandled(error, "routing")
            if isinstance(outcome, Rejection):
                self.dead_letter(message, outcome)
            else:
                accepted.append((message, outcome))
        if tracing_enabled():
            spans = {request.task_id: self.receive_span(m, request) for m, request in accepted}
        traces = {task_id: trace.set_span_in_context(span) for task_id, span in spans.items()}
        try:
            self.record_and_publish([request for _, request in accepted], traces)
            published = [message for message, _ in accepted]
        except BrokerUnavailable:
            lost = self.receiver.abandon([message for message, _ in accepted])
            self.counters.add(self.route.in_queue, "abandoned", len(accepted) - len(lost))
            raise
        except Exception as error:  # noqa: BLE001 - find the message at fault, below
            log.error(
                "route %s: a batch of %d failed (%s); publishing its messages one by one",
                self.route.in_queue,
                len(accepted),
                type(error).__name__,
            )
            published = self.publish_one_by_one(accepted, traces)
        finally:
            for span in spans.values():
                span.end()
        self.complete(published)

    def receive_span(self, message: ReceivedMessage, request: TaskRequest) -> Span:
        """The message's span in the bridge: a child of the producer's ``traceparent`` when the
        message carries one, so the producer's trace goes on through Conduit."""
        return tracer.start_span(
            f"bridge.receive {self.route.in_queue}",
            context=context_from_carrier(message.application_properties),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "servicebus",
                "messaging.destination.name": self.route.in_queue,
                "messaging.message.id": message.message_id,
                "conduit.task_id": request.task_id,
                "conduit.processor": self.route.processor,
            },
        )

    def record_and_publish(
        self, requests: Sequence[TaskRequest], traces: Mapping[str, Context] | None = None
    ) -> None:
        self.ledger.record(requests)
        self.publisher.publish(requests, traces)
        self.counters.add(self.route.in_queue, "published", len(requests))

    def publish_one_by_one(
        self,
        accepted: Sequence[tuple[ReceivedMessage, TaskRequest]],
        traces: Mapping[str, Context],
    ) -> list[ReceivedMessage]:
        """Record and publish each message alone, dead-lettering the ones that fail; returns
        those published. The broker failing on the way abandons the rest, as for a batch."""
        published: list[ReceivedMessage] = []
        for index, (message, request) in enumerate(accepted):
            try:
                self.record_and_publish([request], traces)
            except BrokerUnavailable:
                self.complete(published)
                rest = [message for message, _ in accepted[index:]]
                lost = self.receiver.abandon(rest)
                self.counters.add(self.route.in_queue, "abandoned", len(rest) - len(lost))
                raise
            except Exception as error:  # noqa: BLE001 - this message is the one at fault
                # Its ledger record would make the sweeper publish it again, and fail again.
                self.ledger.drop(request.out_queue, [request])
                self.dead_letter(message, unhandled(error, "publishing"))
            else:
                published.append(message)
        return published

    def complete(self, published: Sequence[ReceivedMessage]) -> None:
        lost = self.receiver.complete(published)
        if lost:
            # Published, but the lock ran out first: the bus delivers these again and they are
            # published again under the same task ids, which the tasks recognise.
            log.warning(
                "route %s: %d lock(s) expired before completion", self.route.in_queue, len(lost)
            )
            self.counters.add(self.route.in_queue, "locks_lost", len(lost))

    def dead_letter(self, message: ReceivedMessage, rejection: Rejection) -> None:
        log.warning(
            "route %s: dead-lettering message %s: %s: %s",
            self.route.in_queue,
            message.message_id,
            rejection.reason,
            rejection.description,
        )
        if self.receiver.dead_letter(message, rejection.reason, rejection.description):
            self.counters.add(self.route.in_queue, "dead_lettered")
        else:
            self.counters.add(self.route.in_queue, "locks_lost")
