"""Counters and histograms that every process adds to in Redis, for ``/metrics`` on any replica.

Prometheus scrapes one web replica at a time, but tasks run in workers and calls on other
replicas: so what happens is counted where it happens, in Redis, and ``/metrics`` reads the
fleet's totals from there (web/metrics.py). Each observation is one pipelined round trip; a
failure to count (Redis away) is logged once and never fails the work being counted.

Keys (one hash per metric; a field per label set, and per bucket for histograms):

    conduit:metrics:counter:<name>     "<labels json>"            -> total
    conduit:metrics:histogram:<name>   "<labels json>|<bucket i>" -> observations in bucket i
                                       "<labels json>|sum", "...|count"

With a Redis client::

    metrics = FleetMetrics(redis_client)
    metrics.count("conduit_tasks_total", task="ai.send_prompt", state="succeeded")
    metrics.observe("conduit_upstream_request_duration_seconds", 0.42, pool="completion")
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from settings import get_logger

log = get_logger(__name__)

KEY_PREFIX = "conduit:metrics"

# name -> help text. Names follow Prometheus conventions: base units, _total for counters.
COUNTERS: dict[str, str] = {
    "conduit_tasks_total": "Celery tasks finished, by task name and state (succeeded, failed, "
    "retried).",
    "conduit_upstream_requests_total": "Requests sent to Azure OpenAI, by pool, deployment and "
    "HTTP status (429 = throttled upstream).",
    "conduit_quota_refusals_total": "Quota acquires refused by the limiter, by pool, deployment "
    "and lane.",
}
# name -> (help text, upper bounds of the buckets in seconds)
HISTOGRAMS: dict[str, tuple[str, tuple[float, ...]]] = {
    "conduit_upstream_request_duration_seconds": (
        "Time Azure OpenAI took to answer, by pool and deployment.",
        (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    ),
    "conduit_quota_retry_after_seconds": (
        "retry_after the limiter gave with a refusal, by pool.",
        (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
    ),
    "conduit_voice_turn_seconds": (
        "Voice turn latencies as the caller hears them, by stage (end of speech to first "
        "outbound audio, to STT final, to LLM first token, to TTS first audio; barge-in to "
        "StopAudio).",
        (0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0),
    ),
}


def _labels_field(labels: Mapping[str, object]) -> str:
    return json.dumps({k: str(v) for k, v in sorted(labels.items())}, separators=(",", ":"))


@dataclass(frozen=True)
class CounterSample:
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class HistogramSample:
    labels: dict[str, str]
    cumulative: list[tuple[float, float]]  # (upper bound, observations <= it), +Inf last
    total: float
    count: float


class FleetMetrics:
    """Adds to, and reads, the fleet's counters and histograms in Redis (thread-safe)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._warned = threading.Event()

    def count(self, name: str, amount: float = 1, **labels: object) -> None:
        if name not in COUNTERS:
            raise ValueError(f"unknown counter {name!r}; declare it in COUNTERS")
        self._write(
            lambda pipe: pipe.hincrbyfloat(_counter_key(name), _labels_field(labels), amount)
        )

    def observe(self, name: str, seconds: float, **labels: object) -> None:
        if name not in HISTOGRAMS:
            raise ValueError(f"unknown histogram {name!r}; declare it in HISTOGRAMS")
        bounds = HISTOGRAMS[name][1]
        bucket = next((i for i, bound in enumerate(bounds) if seconds <= bound), len(bounds))
        field = _labels_field(labels)
        key = _histogram_key(name)

        def add(pipe: Any) -> None:
            pipe.hincrby(key, f"{field}|{bucket}", 1)
            pipe.hincrbyfloat(key, f"{field}|sum", seconds)
            pipe.hincrby(key, f"{field}|count", 1)

        self._write(add)

    def _write(self, add: Callable[[Any], object]) -> None:
        try:
            pipe = self._client.pipeline(transaction=False)
            add(pipe)
            pipe.execute()
        except redis.RedisError as error:
            if not self._warned.is_set():
                self._warned.set()
                log.warning("metrics not counted while Redis is unreachable: %s", error)

    def read_counters(self) -> dict[str, list[CounterSample]]:
        pipe = self._client.pipeline(transaction=False)
        for name in COUNTERS:
            pipe.hgetall(_counter_key(name))
        return {
            name: [
                CounterSample(json.loads(_text(field)), float(value))
                for field, value in sorted(raw.items())
            ]
            for name, raw in zip(COUNTERS, pipe.execute(), strict=True)
        }

    def read_histograms(self) -> dict[str, list[HistogramSample]]:
        pipe = self._client.pipeline(transaction=False)
        for name in HISTOGRAMS:
            pipe.hgetall(_histogram_key(name))
        result: dict[str, list[HistogramSample]] = {}
        for name, raw in zip(HISTOGRAMS, pipe.execute(), strict=True):
            bounds = HISTOGRAMS[name][1]
            per_labels: dict[str, dict[str, float]] = {}
            for field, value in raw.items():
                labels, _, part = _text(field).rpartition("|")
                per_labels.setdefault(labels, {})[part] = float(value)
            samples = []
            for labels, parts in sorted(per_labels.items()):
                running, cumulative = 0.0, []
                for index, bound in [*enumerate(bounds), (len(bounds), float("inf"))]:
                    running += parts.get(str(index), 0.0)
                    cumulative.append((bound, running))
                samples.append(
                    HistogramSample(
                        json.loads(labels), cumulative, parts.get("sum", 0.0), parts.get("count", 0)
                    )
                )
            result[name] = samples
        return result


def _counter_key(name: str) -> str:
    return f"{KEY_PREFIX}:counter:{name}"


def _histogram_key(name: str) -> str:
    return f"{KEY_PREFIX}:histogram:{name}"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
