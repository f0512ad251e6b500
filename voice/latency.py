"""LatencyTool (the older name): how long each turn took, where the caller would notice.

Per turn, all measured from the end of the caller's speech (the end of the last speech window the
VAD heard, not the moment we decided the turn was over):

- ``stt_final_ms``        → the recogniser's final text;
- ``llm_first_token_ms``  → the LLM's first text delta;
- ``tts_first_audio_ms``  → the first synthesised audio of the reply;
- ``first_frame_ms``      → the first reply frame written to the socket (what the caller hears);
- ``barge_in_ms``         caller speech detected over the agent → StopAudio written.

Each call has its tool; finished turns also go into the process-wide :data:`PROCESS_LATENCIES`
(the last :data:`SAMPLES_KEPT` of each), which ``GET /api/v1/media/status`` reports as p50/p95.
Every finished turn is logged as one JSON line with the call id (numbers only, never words),
is one trace (a ``voice.turn`` span from the end of speech to the first frame out, each mark a
span event, the figures as attributes) when tracing is on, and adds to the fleet's
``conduit_voice_turn_seconds`` histogram for ``/metrics``.

The older API also works: ``tool.start("greeting_ttfb")`` ... ``tool.stop("greeting_ttfb")``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict, deque
from functools import cache
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from settings import get_settings
from settings.state_redis import state_redis
from telemetry import tracer
from telemetry.fleet_metrics import FleetMetrics
from telemetry.tracing import tracing_enabled

log = logging.getLogger("conduit.voice.latency")

TURN_METRICS = ("stt_final_ms", "llm_first_token_ms", "tts_first_audio_ms", "first_frame_ms")
BARGE_IN_METRIC = "barge_in_ms"
# Enough turns for a stable p95 on a busy process; a few hundred KB at most.
SAMPLES_KEPT = 2000
_MARKS = {
    "stt_final": "stt_final_ms",
    "llm_first_token": "llm_first_token_ms",
    "tts_first_audio": "tts_first_audio_ms",
    "first_frame": "first_frame_ms",
}


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile (p95 of 20 samples is the 19th smallest)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarize(samples: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "count": len(values),
            "p50": _round(percentile(values, 0.5)),
            "p95": _round(percentile(values, 0.95)),
        }
        for name, values in samples.items()
        if values
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class LatencySamples:
    """Bounded samples per metric, safe to add to from many call threads."""

    def __init__(self, keep: int = SAMPLES_KEPT) -> None:
        self._samples: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=keep))
        self._lock = threading.Lock()

    def add(self, name: str, value_ms: float) -> None:
        with self._lock:
            self._samples[name].append(value_ms)

    def snapshot(self) -> dict[str, list[float]]:
        with self._lock:
            return {name: list(values) for name, values in self._samples.items()}

    def summary(self) -> dict[str, dict[str, Any]]:
        return summarize(self.snapshot())


PROCESS_LATENCIES = LatencySamples()


@cache
def _fleet_metrics() -> FleetMetrics:
    return FleetMetrics(state_redis(get_settings()))


def _wall_ns(monotonic_s: float, now_monotonic: float, now_ns: int) -> int:
    """A ``time.monotonic()`` reading as the wall-clock nanoseconds spans are stamped with."""
    return now_ns - int((now_monotonic - monotonic_s) * 1e9)


def _trace_turn(
    call_id: str, turn: int, outcome: str, marks: dict[str, float], figures: dict[str, float]
) -> None:
    """The finished turn as one trace: spans are made after the fact, from the marks' times."""
    now_monotonic, now_ns = time.monotonic(), time.time_ns()
    span = tracer.start_span(
        "voice.turn",
        context=Context(),  # a root: one turn, one trace
        kind=SpanKind.SERVER,
        start_time=_wall_ns(marks["eou"], now_monotonic, now_ns),
        attributes={
            "conduit.call_id": call_id,
            "conduit.turn": turn,
            "conduit.outcome": outcome,
            **{f"conduit.{k}": v for k, v in figures.items()},
        },
    )
    for point in _MARKS:
        if point in marks:
            span.add_event(point, timestamp=_wall_ns(marks[point], now_monotonic, now_ns))
    span.end(end_time=_wall_ns(max(marks.values()), now_monotonic, now_ns))


class LatencyTool:
    """One call's turn timings; every method may be called from any of the call's threads."""

    def __init__(self, call_id: str, process: LatencySamples | None = PROCESS_LATENCIES) -> None:
        self.call_id = call_id
        self._process = process
        self._lock = threading.Lock()
        self._turns: dict[int, dict[str, float]] = {}
        self.samples: dict[str, list[float]] = defaultdict(list)
        self._timers: dict[str, float] = {}

    # --- turns ------------------------------------------------------------------------------------
    def begin_turn(self, turn: int, speech_ended_at: float) -> None:
        with self._lock:
            self._turns[turn] = {"eou": speech_ended_at}

    def mark(self, turn: int, point: str, at: float | None = None) -> None:
        """Record the first time ``point`` (stt_final, llm_first_token ...) happened in ``turn``."""
        with self._lock:
            marks = self._turns.get(turn)
            if marks is not None and point not in marks:
                marks[point] = time.monotonic() if at is None else at

    def end_turn(self, turn: int, outcome: str = "answered") -> dict[str, float]:
        """Close the turn: its latencies (ms) are recorded, logged and returned."""
        with self._lock:
            marks = self._turns.pop(turn, None)
        if marks is None:
            return {}
        eou = marks["eou"]
        figures = {
            metric: round((marks[point] - eou) * 1000, 1)
            for point, metric in _MARKS.items()
            if point in marks
        }
        for metric, value in figures.items():
            self._add(metric, value)
        if tracing_enabled():
            _trace_turn(self.call_id, turn, outcome, marks, figures)
        log.info(
            "voice turn %s",
            outcome,
            extra={"call_id": self.call_id, "turn": turn, "outcome": outcome, **figures},
        )
        return figures

    def barge_in(self, detected_at: float, stopped_at: float) -> float:
        value = round((stopped_at - detected_at) * 1000, 1)
        self._add(BARGE_IN_METRIC, value)
        if tracing_enabled():
            now_monotonic, now_ns = time.monotonic(), time.time_ns()
            span = tracer.start_span(
                "voice.barge_in",
                context=Context(),
                start_time=_wall_ns(detected_at, now_monotonic, now_ns),
                attributes={"conduit.call_id": self.call_id, f"conduit.{BARGE_IN_METRIC}": value},
            )
            span.end(end_time=_wall_ns(stopped_at, now_monotonic, now_ns))
        log.info("voice barge-in", extra={"call_id": self.call_id, BARGE_IN_METRIC: value})
        return value

    def _add(self, metric: str, value: float) -> None:
        with self._lock:
            self.samples[metric].append(value)
        if self._process is not None:
            self._process.add(metric, value)
            # The process's calls count for the fleet too (a tool without a process is a test's).
            stage = metric.removesuffix("_ms")
            _fleet_metrics().observe("conduit_voice_turn_seconds", value / 1000, stage=stage)

    def summary(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            samples = {name: list(values) for name, values in self.samples.items()}
        return summarize(samples)

    # --- the older start/stop API ---------------------------------------------------------------
    def start(self, name: str) -> None:
        with self._lock:
            self._timers[name] = time.monotonic()

    def stop(self, name: str) -> float | None:
        """Milliseconds since ``start(name)``, recorded under ``name``; None when not started."""
        with self._lock:
            began = self._timers.pop(name, None)
        if began is None:
            return None
        value = round((time.monotonic() - began) * 1000, 1)
        self._add(name, value)
        return value
