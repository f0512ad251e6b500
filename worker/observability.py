"""What a worker tells the outside: its traces, and a count of every task it finished.

Tracing starts once the worker is up, in the process that runs tasks: the worker's own process
for the threads, gevent and solo pools, each child for prefork (an exporter thread does not
survive a fork). Task outcomes are counted in Redis (telemetry/fleet_metrics.py) for ``/metrics``:
``conduit_tasks_total{task, state}`` with state succeeded, failed or retried.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from celery.signals import task_failure, task_retry, task_success, worker_init, worker_process_init

from settings import get_settings
from settings.state_redis import state_redis
from telemetry import configure_tracing
from telemetry.fleet_metrics import FleetMetrics

SERVICE_NAME = "conduit-worker"


@worker_init.connect
def _trace_worker(**_: Any) -> None:
    if get_settings().worker_pool != "prefork":
        configure_tracing(SERVICE_NAME)


@worker_process_init.connect
def _trace_pool_process(**_: Any) -> None:
    configure_tracing(SERVICE_NAME)


@cache
def _fleet_metrics() -> FleetMetrics:
    return FleetMetrics(state_redis(get_settings()))


def _count(sender: Any, state: str) -> None:
    name = getattr(sender, "name", None) or getattr(getattr(sender, "request", None), "task", "")
    _fleet_metrics().count("conduit_tasks_total", task=name or "unknown", state=state)


@task_success.connect
def _count_success(sender: Any = None, **_: Any) -> None:
    _count(sender, "succeeded")


@task_failure.connect
def _count_failure(sender: Any = None, **_: Any) -> None:
    _count(sender, "failed")


@task_retry.connect
def _count_retry(sender: Any = None, **_: Any) -> None:
    _count(sender, "retried")
