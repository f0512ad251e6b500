"""The ledger: tasks the bridge published whose result it has not sent yet, so none is lost.

Why it exists: Celery's Redis transport takes a task off its queue (BRPOP) before it records the
task as unacknowledged. A worker killed between the two loses the task for good; no visibility
timeout brings it back, and its bus message was completed long ago. The ledger closes that gap
end to end: the ingress records every task before it completes the bus message; the egress
forgets it in the transaction that acknowledges its result; and :class:`LostTaskSweeper`
publishes again any task recorded for longer than ``BRIDGE_REPUBLISH_AFTER_SECONDS`` that no
worker holds: the result backend shows no trace of it, or a failure outside the processor (whose
outcome was never written). Publishing again is safe: the task id is the same and a task writes
one result per id. A task that merely waited that long in a queue runs twice at worst, and the
second run finds the first one's result.

A task that ends without an outcome every time it runs fails outside its processor (a result
that cannot be written, a crash in the task's wrapper), and publishing it again would go on
forever. So republishing is counted per task, and a task already republished
``BRIDGE_MAX_REPUBLISHES`` times is answered instead: the sweeper writes its failure payload
(error type ``RepublishLimitExceeded``) to the outbox, once per task id like any outcome, and
the egress sends it. Every message so ends in exactly one result (or, at the ingress, one dead
letter). This holds whatever Celery state a task ends in: the sweeper asks the outbox, not the
state, whether a task was answered.

    conduit:bridge:ledger:{<out_queue>}               zset  task id -> last published (unix s)
    conduit:bridge:ledger:{<out_queue>}:requests      hash  task id -> the TaskRequest, JSON
    conduit:bridge:ledger:{<out_queue>}:republished   hash  task id -> times published again

One pair per output queue, under the outbox stream's hash tag: the egress acknowledges a result
and forgets its task in one transaction, which Redis Cluster allows only within one slot.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Sequence
from typing import cast

import redis
from celery import Celery, states

from bridge.celery_publisher import CeleryPublisher
from bridge.errors import BrokerUnavailable
from bridge.routing import TaskRequest
from settings import get_logger
from tasks.outbox import write_result, written_key
from tasks.processors.base import failure_payload

log = get_logger(__name__)

KEY_PREFIX = "conduit:bridge:ledger"
# Result-backend states of a task that no worker holds and that wrote no result: never taken
# (lost as a worker took it), or crashed outside the processor (its outcome never written).
LOST_STATES = frozenset({states.PENDING, states.FAILURE})
# Overdue tasks looked at per sweep and queue: a sweep stays short however much a worker lost.
SWEEP_BATCH = 500


def ledger_key(out_queue: str) -> str:
    return f"{KEY_PREFIX}:{{{out_queue}}}"


def requests_key(out_queue: str) -> str:
    return f"{ledger_key(out_queue)}:requests"


def republished_key(out_queue: str) -> str:
    return f"{ledger_key(out_queue)}:republished"


class RepublishLimitExceeded(Exception):
    """A task that never wrote an outcome, however often it ran; its name is the error type of
    the failure payload written in its place."""


def last_state(app: Celery, task_id: str) -> tuple[str, str]:
    """The task's state in the result backend, and for a failure the error's type (never its
    message: it may quote the message body)."""
    meta = app.backend.get_task_meta(task_id)
    state, result = meta.get("status", states.PENDING), meta.get("result")
    if state != states.FAILURE:
        return state, state
    if isinstance(result, BaseException):
        return state, f"{state} ({type(result).__name__})"
    if isinstance(result, dict) and result.get("exc_type"):
        return state, f"{state} ({result['exc_type']})"
    return state, state


class Ledger:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def record(self, requests: Sequence[TaskRequest]) -> None:
        """Record published tasks; BrokerUnavailable when Redis (the broker's) cannot."""
        if not requests:
            return
        now = time.time()
        pipe = self.client.pipeline(transaction=False)
        for request in requests:
            pipe.zadd(ledger_key(request.out_queue), {request.task_id: now})
            pipe.hset(
                requests_key(request.out_queue),
                request.task_id,
                json.dumps(dataclasses.asdict(request)),
            )
        try:
            pipe.execute()
        except redis.RedisError as error:
            raise BrokerUnavailable(f"recording {len(requests)} task(s) failed: {error}") from error

    @staticmethod
    def forget(pipe: redis.client.Pipeline, out_queue: str, task_ids: Sequence[str]) -> None:
        """Queue the removal on ``pipe``: in the same transaction that acknowledges results."""
        if task_ids:
            pipe.zrem(ledger_key(out_queue), *task_ids)
            pipe.hdel(requests_key(out_queue), *task_ids)
            pipe.hdel(republished_key(out_queue), *task_ids)

    def overdue(self, out_queue: str, older_than_s: float) -> list[TaskRequest]:
        # redis-py types a sync client's replies as "maybe awaitable": cast to what they are.
        task_ids = cast(
            list[str],
            self.client.zrangebyscore(
                ledger_key(out_queue), "-inf", time.time() - older_than_s, start=0, num=SWEEP_BATCH
            ),
        )
        if not task_ids:
            return []
        stored = cast(list[str | None], self.client.hmget(requests_key(out_queue), task_ids))
        return [TaskRequest(**json.loads(request)) for request in stored if request]

    def answered(self, out_queue: str, requests: Sequence[TaskRequest]) -> list[TaskRequest]:
        """Those whose outcome is already in the outbox: the egress delivers it from there."""
        pipe = self.client.pipeline(transaction=False)
        for request in requests:
            pipe.exists(written_key(out_queue, request.task_id))
        return [
            request for request, written in zip(requests, pipe.execute(), strict=True) if written
        ]

    def drop(self, out_queue: str, requests: Sequence[TaskRequest]) -> None:
        """Forget tasks now; BrokerUnavailable when Redis cannot."""
        pipe = self.client.pipeline(transaction=False)
        self.forget(pipe, out_queue, [request.task_id for request in requests])
        try:
            pipe.execute()
        except redis.RedisError as error:
            raise BrokerUnavailable(
                f"forgetting {len(requests)} task(s) failed: {error}"
            ) from error

    def republished(self, out_queue: str, requests: Sequence[TaskRequest]) -> list[int]:
        """How many times each task was published again so far."""
        counts = cast(
            list[str | None],
            self.client.hmget(republished_key(out_queue), [r.task_id for r in requests]),
        )
        return [int(count or 0) for count in counts]

    def count_republished(self, out_queue: str, requests: Sequence[TaskRequest]) -> None:
        """Count one more republish of each; counted before publishing, so a crash in between
        can only bring the limit closer, never let a task past it."""
        pipe = self.client.pipeline(transaction=False)
        for request in requests:
            pipe.hincrby(republished_key(out_queue), request.task_id, 1)
        pipe.execute()

    def touch(self, out_queue: str, requests: Sequence[TaskRequest]) -> None:
        """Start the clock again: looked at now, looked at again a period later."""
        if requests:
            self.client.zadd(
                ledger_key(out_queue), {r.task_id: time.time() for r in requests}, xx=True
            )


class LostTaskSweeper:
    """Publishes again the recorded tasks the broker lost, up to a limit; runs in its own
    thread."""

    def __init__(
        self,
        ledger: Ledger,
        publisher: CeleryPublisher,
        out_queues: Sequence[str],
        *,
        republish_after_s: float,
        max_republishes: int,
    ) -> None:
        self.ledger, self.publisher, self.republish_after_s = ledger, publisher, republish_after_s
        self.max_republishes = max_republishes
        self.out_queues = sorted(set(out_queues))

    def run(self, stop: threading.Event) -> None:
        # Four looks per period: a lost task is published again within 1.25 periods.
        while not stop.wait(max(1.0, self.republish_after_s / 4)):
            try:
                self.sweep()
            except (redis.RedisError, BrokerUnavailable) as error:
                log.warning("lost-task sweep failed: %s; trying again later", error)

    def sweep(self) -> int:
        """Publish again the overdue tasks that are neither running, retrying nor done, and
        answer with their failure payload those republished too often; returns how many were
        published again."""
        republished = 0
        for out_queue in self.out_queues:
            overdue = self.ledger.overdue(out_queue, self.republish_after_s)
            if not overdue:
                continue
            # A message delivered again after its task was answered re-runs against the stored
            # outcome and writes nothing new, so the egress never clears its entry: clear it here.
            answered = self.ledger.answered(out_queue, overdue)
            self.ledger.drop(out_queue, answered)
            overdue = [request for request in overdue if request not in answered]
            # A task still waiting in its queue (a backlog longer than the period) is not lost;
            # publishing it again each period would grow the queue without bound.
            held = self.publisher.held_task_ids(request.queue for request in overdue)
            lost: list[tuple[TaskRequest, str]] = []
            for request in overdue:
                if request.task_id not in held:
                    state, described = last_state(self.publisher.app, request.task_id)
                    if state in LOST_STATES:
                        lost.append((request, described))
            if lost:
                republished += self.handle_lost(out_queue, lost)
            # All of them, so tasks still running do not hold the head of the ledger.
            self.ledger.touch(out_queue, overdue)
        return republished

    def handle_lost(self, out_queue: str, lost: Sequence[tuple[TaskRequest, str]]) -> int:
        """Publish again the lost tasks under the limit, answer the others; ``lost`` pairs each
        with its last state, described. Returns how many were published again."""
        counts = self.ledger.republished(out_queue, [request for request, _ in lost])
        again = []
        for (request, state), count in zip(lost, counts, strict=True):
            if count < self.max_republishes:
                again.append(request)
                continue
            self.give_up(
                request,
                RepublishLimitExceeded(
                    f"the task ended with no outcome {count + 1} times, last as {state}; not "
                    f"published again after {count} (BRIDGE_MAX_REPUBLISHES)"
                ),
            )
        if again:
            log.warning(
                "publishing again %d task(s) the broker lost: %s",
                len(again),
                ", ".join(request.task_id for request in again[:5]),
            )
            self.ledger.count_republished(out_queue, again)
            return self.publish(again)
        return 0

    def publish(self, requests: Sequence[TaskRequest]) -> int:
        """Publish, returning how many were; a request that fails for a reason of its own (not
        the broker's) is answered with its failure payload, so one such task neither stops the
        sweeper nor comes back."""
        try:
            self.publisher.publish(requests)
            return len(requests)
        except BrokerUnavailable:
            raise
        except Exception as error:  # noqa: BLE001 - find the request at fault, below
            if len(requests) == 1:
                self.give_up(requests[0], error)
                return 0
        return sum(self.publish([request]) for request in requests)

    def give_up(self, request: TaskRequest, error: BaseException) -> None:
        """Write the task's failure payload to the outbox in place of the outcome it never
        wrote; the egress sends it and forgets the task. Write-once per task id: if a copy of
        the task still running writes its outcome first, that one is the answer."""
        log.error(
            "task %s of message %s for %s: %s: %s; writing its failure payload",
            request.task_id,
            request.message_id,
            request.out_queue,
            type(error).__name__,
            error,
        )
        write_result(
            self.ledger.client,
            request.out_queue,
            request.task_id,
            request.message_id,
            failure_payload(request.body, error),
        )
