"""What `make run` says while its inputs wait: which ones, in what state, and why.

A long clip can wait half a minute on the Whisper pool's requests-per-minute limit, and a wrong
endpoint makes every task retry; without a word the terminal looks hung. Every
``PROGRESS_EVERY_SECS`` without a new result, one line names the inputs still out (their Celery
state, and a retry's reason), the quota pools that are full and when they free up, the Celery
queues with a backlog, and any Azure OpenAI endpoint (or the emulator) that does not answer.

:func:`waiting_line` only formats (no I/O); :class:`WaitWatcher` reads Celery's result backend,
the limiter, the queue lengths and the endpoints.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis
from celery import Celery

from quota import QuotaLimiter, QuotaStatus
from settings import Settings
from stack.workload import SampleMessage
from tasks.processors import get_processor, task_id_for
from web.health import probe_upstream, upstreams

# Quiet for this long while inputs are out: say what they wait for.
PROGRESS_EVERY_SECS = 10.0
# Name this many waiting inputs at most; the rest are counted.
NAMED_INPUTS = 4
# A retry's reason is cut to this many characters on the progress line.
REASON_CHARS = 120


@dataclass(frozen=True)
class InputState:
    """One input still without a result: its label, Celery state, and why, when Celery says."""

    label: str
    state: str
    reason: str = ""


def full_pools(statuses: Iterable[QuotaStatus]) -> list[str]:
    """The pools a task cannot be admitted to now, and when the window frees some room."""
    full = []
    for status in statuses:
        name = f"{status.pool}/{status.deployment}"
        if status.available_requests <= 0:
            limit = f"{status.used_requests + status.locked_requests} of {status.rpm} requests"
        elif status.tpm and status.available_tokens <= 0:
            limit = f"{status.used_tokens + status.locked_tokens:,} of {status.tpm:,} tokens"
        else:
            continue
        full.append(f"{name} full ({limit}; room again in {status.reset_time_seconds:.0f} s)")
    return full


def waiting_line(
    waited_s: float,
    inputs: Sequence[InputState],
    pools: Sequence[str],
    backlog: dict[str, int],
    upstream_problems: Sequence[str],
) -> str:
    """One progress line: ``… 30 s without a result; waiting for 2: ...; quota: ...``."""
    named = []
    for item in inputs[:NAMED_INPUTS]:
        reason = f": {item.reason[:REASON_CHARS]}" if item.reason else ""
        named.append(f"{item.label} ({item.state}{reason})")
    if len(inputs) > NAMED_INPUTS:
        named.append(f"{len(inputs) - NAMED_INPUTS} more")
    parts = [
        f"  … {waited_s:.0f} s without a result; waiting for {len(inputs)}: {', '.join(named)}"
    ]
    if pools:
        parts.append("quota: " + ", ".join(pools))
    queued = {queue: depth for queue, depth in backlog.items() if depth}
    if queued:
        parts.append("queued: " + ", ".join(f"{q} {n}" for q, n in sorted(queued.items())))
    parts.extend(f"upstream DOWN: {problem}" for problem in upstream_problems)
    return "; ".join(parts)


class WaitWatcher:
    """Gathers what :func:`waiting_line` needs, and says it when results stop coming."""

    def __init__(
        self,
        settings: Settings,
        celery: Celery,
        client: redis.Redis,
        limiter: QuotaLimiter,
        every_s: float = PROGRESS_EVERY_SECS,
    ) -> None:
        self.settings, self.celery, self.client, self.limiter = settings, celery, client, limiter
        self.every_s = every_s
        self.last_result = self.last_said = time.monotonic()

    def result_arrived(self) -> None:
        self.last_result = time.monotonic()

    def line_if_quiet(self, waiting: Sequence[SampleMessage]) -> str | None:
        """A progress line when nothing arrived for ``every_s`` (and none was said since)."""
        now = time.monotonic()
        if not waiting or now - max(self.last_result, self.last_said) < self.every_s:
            return None
        self.last_said = now
        return self.describe(now - self.last_result, waiting)

    def describe(self, waited_s: float, waiting: Sequence[SampleMessage]) -> str:
        queues = sorted({get_processor(m.route.processor).queue for m in waiting})
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(queue)
        backlog = dict(zip(queues, map(int, pipe.execute()), strict=True))
        problems = [p for p in map(probe_upstream, upstreams(self.settings)) if p]
        return waiting_line(
            waited_s,
            [self.input_state(message) for message in waiting],
            full_pools(self.limiter.all_status()),
            backlog,
            problems,
        )

    def input_state(self, message: SampleMessage) -> InputState:
        result = self.celery.AsyncResult(task_id_for(message.route.in_queue, message.message_id))
        state = str(result.state)
        if state == "RETRY" and isinstance(result.info, BaseException):
            return InputState(message.label, state, f"{type(result.info).__name__}: {result.info}")
        if state == "PENDING":
            state = "not started"  # Celery's name for "no record yet": queued, or not yet sent
        return InputState(message.label, state)
