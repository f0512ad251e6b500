"""Egress: results from the outbox to their output queues, each sent once.

Tasks append results to a Redis Stream per output queue, one entry per task id
(tasks/outbox.py). The egress reads every stream through one consumer group, sends a batch to
its output queue with ``message_id`` = the task id, and only after the send succeeded
acknowledges and deletes the entries and forgets their tasks in the ledger (ledger.py). A bridge
that dies between the send and the acknowledgement leaves its entries pending; once they have
idled ``BRIDGE_RECLAIM_IDLE_SECONDS`` another bridge (or the restarted one) claims them
(XAUTOCLAIM) and sends them again, and the bus drops that second copy as a duplicate of the
message id. On Service Bus this needs duplicate detection enabled on the output queues; the
local bus always has it.

A result too large for one message (over ``BRIDGE_MAX_MESSAGE_BYTES``, or refused by the bus as
over its own limit) would be refused forever and hold up every result behind it: its task's
failure payload (error type ``ResultTooLarge``) is sent in its place, and counted as too_large.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, cast

import redis
import redis.cluster
from opentelemetry import context, trace
from opentelemetry.trace import Span, SpanKind

from bridge.bus_api import Bus, OutgoingMessage, PropertyValue
from bridge.errors import BusError, BusUnavailable, MessageTooLarge
from bridge.ledger import Ledger
from bridge.metrics import Counters
from settings import get_logger
from tasks.outbox import stream_key
from tasks.processors.base import failure_payload
from telemetry import context_from_carrier, current_carrier, tracer
from telemetry.tracing import tracing_enabled

log = get_logger(__name__)

GROUP = "conduit-bridge"
# How long one read waits for new results; also the longest a stop request waits for the egress.
READ_BLOCK_MS = 1000
# A consumer (a bridge process) with nothing pending and idle this long is gone: forget it.
FORGET_CONSUMER_AFTER_MS = 3600 * 1000
FAILURE_RETRY_SECS = 1.0

Entry = tuple[str, dict[str, str] | None]


def current_carrier_of(span: Span) -> dict[str, str]:
    """``span``'s context as message properties (``traceparent``)."""
    token = context.attach(trace.set_span_in_context(span))
    try:
        return current_carrier()
    finally:
        context.detach(token)


def slot_groups(client: redis.Redis, streams: Sequence[str]) -> list[list[str]]:
    """``streams`` in groups one XREADGROUP may read together: all of them on a plain Redis; on a
    cluster, those in one hash slot (a read over two slots fails with CROSSSLOT)."""
    if not isinstance(client, redis.cluster.RedisCluster):
        return [list(streams)]
    groups: dict[int, list[str]] = {}
    for stream in streams:
        groups.setdefault(client.keyslot(stream), []).append(stream)
    return list(groups.values())


class ResultTooLarge(Exception):
    """A task's result no message can carry; its name is the error type in the failure payload."""


class Egress:
    """Sends the outbox of every output queue until told to stop, then finishes its batch."""

    def __init__(
        self,
        client: redis.Redis,
        bus: Bus,
        out_queues: Sequence[str],
        consumer: str,
        counters: Counters,
        *,
        batch_size: int,
        reclaim_idle_s: float,
        max_message_bytes: int,
    ) -> None:
        self.client, self.bus, self.consumer, self.counters = client, bus, consumer, counters
        self.out_queue_of = {stream_key(queue): queue for queue in sorted(set(out_queues))}
        self.read_groups = slot_groups(client, list(self.out_queue_of))
        self.batch_size = batch_size
        self.reclaim_idle_ms = int(reclaim_idle_s * 1000)
        self.max_message_bytes = max_message_bytes
        # Task id -> why the bus refused its result as too large, though within our limit (a
        # namespace whose limit is lower); forgotten once its failure payload is sent.
        self.refused: dict[str, str] = {}
        # Entries this consumer read but could not send; read again (id "0") before new ones.
        self.own_pending = False

    def run(self, stop: threading.Event) -> None:
        log.info("egress for %s started", ", ".join(self.out_queue_of.values()))
        next_reclaim = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() >= next_reclaim:
                    self.ensure_groups()
                    self.reclaim()
                    next_reclaim = time.monotonic() + self.reclaim_idle_ms / 2000
                self.run_once()
            except (BusUnavailable, redis.ConnectionError, redis.TimeoutError) as error:
                log.warning("egress: %s; retrying", error)
                stop.wait(FAILURE_RETRY_SECS)
            except (BusError, redis.ResponseError) as error:
                # NOGROUP after Redis lost its data, among others: recreate the groups first.
                log.error("egress: %s", error)
                next_reclaim = 0.0
                stop.wait(FAILURE_RETRY_SECS)
        log.info("egress stopped")

    def ensure_groups(self) -> None:
        """One consumer group per stream, from the stream's start: results written before any
        bridge ran are sent too."""
        for stream in self.out_queue_of:
            try:
                self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise

    def run_once(self) -> int:
        """Read and send one batch per stream; returns how many entries were sent."""
        start = "0" if self.own_pending else ">"
        # One read per slot group (one in all on a plain Redis); the wait is shared out so a
        # stop request still waits READ_BLOCK_MS at most, and once a group had entries the
        # others are read without waiting.
        block_ms = max(1, READ_BLOCK_MS // len(self.read_groups))
        sent, read_any = 0, False
        for streams in self.read_groups:
            # redis-py types a sync client's replies as "maybe awaitable": cast to what they are.
            replies = cast(
                list[tuple[str, list[Entry]]] | None,
                self.client.xreadgroup(
                    GROUP,
                    self.consumer,
                    dict.fromkeys(streams, start),
                    count=self.batch_size,
                    block=None if self.own_pending or read_any else block_ms,
                ),
            )
            for stream, entries in replies or []:
                read_any = read_any or bool(entries)
                sent += self.send(stream, entries)
        if self.own_pending and not read_any:
            self.own_pending = False
        return sent

    def reclaim(self) -> None:
        """Take over entries another consumer (a dead bridge) read but never acknowledged."""
        for stream in self.out_queue_of:
            cursor = "0-0"
            while True:
                cursor, entries, *_ = cast(
                    list[Any],
                    self.client.xautoclaim(
                        stream,
                        GROUP,
                        self.consumer,
                        self.reclaim_idle_ms,
                        start_id=cursor,
                        count=self.batch_size,
                    ),
                )
                if entries:
                    log.info(
                        "egress: reclaimed %d unsent result(s) of %s",
                        len(entries),
                        self.out_queue_of[stream],
                    )
                    self.send(stream, entries)
                if cursor in ("0-0", b"0-0"):
                    break
            self.forget_gone_consumers(stream)

    def forget_gone_consumers(self, stream: str) -> None:
        for consumer in cast(list[dict[str, Any]], self.client.xinfo_consumers(stream, GROUP)):
            if (
                consumer["name"] != self.consumer
                and consumer["pending"] == 0
                and consumer["idle"] > FORGET_CONSUMER_AFTER_MS
            ):
                self.client.xgroup_delconsumer(stream, GROUP, consumer["name"])

    def send(self, stream: str, entries: Sequence[Entry]) -> int:
        if not entries:
            return 0
        out_queue = self.out_queue_of[stream]
        results = []
        spans: list[Span] = []
        for entry_id, fields in entries:
            if fields and {"task_id", "message_id", "body"} <= fields.keys():
                properties: dict[str, PropertyValue] = {}
                if tracing_enabled():
                    span = self.send_span(out_queue, fields)
                    spans.append(span)
                    properties = dict(current_carrier_of(span))
                results.append(
                    OutgoingMessage(
                        body=fields["body"],
                        message_id=fields["task_id"],
                        correlation_id=fields["message_id"],
                        application_properties=properties,
                    )
                )
            elif fields:  # deleted entries come back as None: nothing to send, just acknowledge
                log.error(
                    "egress: outbox entry %s of %s lacks task_id/message_id/body; dropping it: %s",
                    entry_id,
                    out_queue,
                    fields,
                )
        try:
            return self.send_results(stream, out_queue, entries, results)
        finally:
            for span in spans:
                span.end()

    def send_span(self, out_queue: str, fields: Mapping[str, str]) -> Span:
        """The result's send, in the trace of the task that wrote it (its outbox entry carries
        the ``traceparent``); the message sent carries this span's, so the trace goes on."""
        return tracer.start_span(
            f"bridge.send {out_queue}",
            context=context_from_carrier(fields),
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "servicebus",
                "messaging.destination.name": out_queue,
                "messaging.message.id": fields["task_id"],
            },
        )

    def send_results(
        self,
        stream: str,
        out_queue: str,
        entries: Sequence[Entry],
        results: Sequence[OutgoingMessage],
    ) -> int:
        messages = [self.sendable(out_queue, result) for result in results]
        try:
            self.bus.send(out_queue, messages)
        except MessageTooLarge as error:
            if error.message_id in self.refused:
                raise  # even its failure payload is too large: a limit no result can meet
            # Read the batch again at once; this time the refused result is replaced.
            self.refused[error.message_id] = str(error)
            self.own_pending = True
            return 0
        except (BusError, BusUnavailable):
            self.own_pending = True
            self.counters.add(out_queue, "send_failures", len(messages))
            raise
        ids = [entry_id for entry_id, _ in entries]
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(stream, GROUP, *ids)
        pipe.xdel(stream, *ids)
        Ledger.forget(pipe, out_queue, [message.message_id for message in messages])
        try:
            pipe.execute()
        except redis.RedisError:
            # Sent but still pending: sent again later, and dropped then as a duplicate.
            self.own_pending = True
            raise
        for message in messages:
            self.refused.pop(message.message_id, None)
        replaced = [
            result
            for message, result in zip(messages, results, strict=True)
            if message is not result
        ]
        self.counters.add(out_queue, "sent", len(messages))
        self.counters.add(out_queue, "too_large", len(replaced))
        return len(messages)

    def sendable(self, out_queue: str, result: OutgoingMessage) -> OutgoingMessage:
        """The result, or its task's failure payload when the result is too large to send."""
        size = len(result.body.encode())
        detail = self.refused.get(result.message_id)
        if detail is None and size > self.max_message_bytes:
            detail = (
                f"the result is {size} bytes, {size - self.max_message_bytes} bytes over "
                f"the limit of {self.max_message_bytes} bytes for one message "
                "(BRIDGE_MAX_MESSAGE_BYTES)"
            )
        if detail is None:
            return result
        log.error(
            "egress: the result of task %s for %s is too large to send; sending its "
            "failure payload instead: %s",
            result.message_id,
            out_queue,
            detail,
        )
        payload = failure_payload(json.loads(result.body), ResultTooLarge(detail))
        return replace(result, body=json.dumps(payload, ensure_ascii=False))
