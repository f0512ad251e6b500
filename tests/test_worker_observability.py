"""A real worker counts what it finishes in Redis, for /metrics."""

from __future__ import annotations

import time

from telemetry.fleet_metrics import FleetMetrics


def test_a_worker_counts_its_finished_tasks(start_worker, celery_app, redis_client) -> None:
    start_worker(concurrency=2)
    for _ in range(3):
        assert celery_app.send_task("worker.ping").get(timeout=30)["pong"] is True

    fleet = FleetMetrics(redis_client)
    deadline = time.monotonic() + 10  # the signal runs after the result is stored
    while time.monotonic() < deadline:
        counts = {
            (c.labels["task"], c.labels["state"]): c.value
            for c in fleet.read_counters()["conduit_tasks_total"]
        }
        if counts.get(("worker.ping", "succeeded")) == 3:
            break
        time.sleep(0.1)
    assert counts == {("worker.ping", "succeeded"): 3}
