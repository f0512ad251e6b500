"""``GET /metrics``: the fleet in Prometheus's text format, behind the same auth as the API.

Two sources, both in Redis, so every web replica answers for the whole fleet:
- the dashboard's snapshot (web/snapshot.py: one pipelined read of quota, queues and the bridge),
  exposed as gauges of what is true now and as the bridge's running totals;
- the counters and histograms processes add to as work happens (telemetry/fleet_metrics.py:
  tasks finished, upstream requests and their latency, quota refusals, voice turn latencies).

Prometheus authenticates with a bearer token or, in newer versions, any header: an Entra ID token
or ``X-API-Key`` as for the rest of the API (web/auth.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

from flask import Blueprint, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from telemetry.fleet_metrics import COUNTERS, HISTOGRAMS, FleetMetrics
from voice.calls import ACTIVE_CALLS
from web.services import services

blueprint = Blueprint("metrics", __name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (snapshot field, metric name, help) for each pool+deployment's quota figures.
QUOTA_GAUGES = (
    ("used_tokens", "conduit_quota_used_tokens", "Tokens charged in the current window."),
    ("locked_tokens", "conduit_quota_locked_tokens", "Tokens held by requests in flight."),
    ("tpm", "conduit_quota_limit_tokens", "Tokens-per-window limit."),
    ("used_requests", "conduit_quota_used_requests", "Requests charged in the current window."),
    ("locked_requests", "conduit_quota_locked_requests", "Requests in flight."),
    ("rpm", "conduit_quota_limit_requests", "Requests-per-window limit."),
)
# Bridge counters per route, all running totals since the bridge's data began.
BRIDGE_COUNTERS = (
    "received",
    "published",
    "dead_lettered",
    "abandoned",
    "locks_lost",
    "sent",
    "send_failures",
    "too_large",
)


class FleetCollector(Collector):
    """Turns one snapshot and the fleet's counters into metric families, per scrape."""

    def __init__(self, snapshot: dict[str, Any], fleet: FleetMetrics, active_calls: int) -> None:
        self._snapshot = snapshot
        self._fleet = fleet
        self._active_calls = active_calls

    def collect(self) -> Iterator[Metric]:
        calls = GaugeMetricFamily("conduit_voice_calls_active", "Phone calls in progress.")
        calls.add_metric([], self._active_calls)
        yield calls
        yield from self._quota()
        yield from self._queues()
        yield from self._bridge()
        yield from self._fleet_counters()

    def _quota(self) -> Iterator[Metric]:
        labels = ["pool", "deployment"]
        for field, name, help_text in QUOTA_GAUGES:
            gauge = GaugeMetricFamily(name, help_text, labels=labels)
            for pool in self._snapshot["pools"]:
                gauge.add_metric([pool["pool"], pool["deployment"]], pool[field])
            yield gauge
        window = GaugeMetricFamily(
            "conduit_quota_window_seconds", "Length of the quota window the limits apply to."
        )
        window.add_metric([], self._snapshot["window_seconds"])
        yield window

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "conduit_celery_queue_depth", "Tasks waiting in a Celery queue.", labels=["queue"]
        )
        for queue in self._snapshot["queues"]:
            depth.add_metric([queue["name"]], queue["depth"])
        yield depth
        in_progress = GaugeMetricFamily(
            "conduit_celery_tasks_in_progress", "Tasks taken by workers and not yet acknowledged."
        )
        in_progress.add_metric([], self._snapshot["in_progress"])
        yield in_progress

    def _bridge(self) -> Iterator[Metric]:
        bridge = self._snapshot["bridge"]
        alive = GaugeMetricFamily("conduit_bridges_alive", "Bridge processes beating now.")
        alive.add_metric([], sum(1 for b in bridge["bridges"] if b["alive"]))
        yield alive
        messages = CounterMetricFamily(
            "conduit_bridge_messages",
            "Messages the bridge handled, by input queue and event.",
            labels=["in_queue", "event"],
        )
        backlog = GaugeMetricFamily(
            "conduit_bridge_backlog",
            "Per route: tasks waiting for a worker (celery) and results owed to the bus (outbox).",
            labels=["in_queue", "stage"],
        )
        for route in bridge["routes"]:
            for event in BRIDGE_COUNTERS:
                messages.add_metric([route["in_queue"], event], route.get(event, 0))
            backlog.add_metric([route["in_queue"], "celery"], route["celery_backlog"])
            backlog.add_metric([route["in_queue"], "outbox"], route["outbox_lag"])
        yield messages
        yield backlog

    def _fleet_counters(self) -> Iterator[Metric]:
        for name, samples in self._fleet.read_counters().items():
            names = _label_names(samples)
            # The family's name is without _total: prometheus_client appends it to the sample.
            counter = CounterMetricFamily(name.removesuffix("_total"), COUNTERS[name], labels=names)
            for sample in samples:
                counter.add_metric([sample.labels.get(n, "") for n in names], sample.value)
            yield counter
        for name, histograms in self._fleet.read_histograms().items():
            names = _label_names(histograms)
            histogram = HistogramMetricFamily(name, HISTOGRAMS[name][0], labels=names)
            for h in histograms:
                histogram.add_metric(
                    [h.labels.get(n, "") for n in names],
                    [(_bound(bound), count) for bound, count in h.cumulative],
                    sum_value=h.total,
                )
            yield histogram


def _label_names(samples: list[Any]) -> list[str]:
    """Every label any sample of a family has (a sample without one gets it empty)."""
    return sorted({name for sample in samples for name in sample.labels})


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


@blueprint.get("/metrics")
def metrics() -> Response:
    conduit = services()
    registry = CollectorRegistry(auto_describe=False)
    active_calls = cast(int, conduit.redis.zcard(ACTIVE_CALLS))
    registry.register(
        FleetCollector(conduit.snapshot.read(), FleetMetrics(conduit.state), active_calls)
    )
    return Response(generate_latest(registry), content_type=PROMETHEUS_CONTENT_TYPE)
