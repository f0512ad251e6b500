"""The Celery app, built from settings. It holds configuration only; the work lives in tasks/.

Delivery guarantees come from three settings together: ``task_acks_late`` (a message is acked
after its task finished, not when it was taken), ``task_reject_on_worker_lost`` (a task whose
process died goes back to the queue) and a prefetch of one (a worker holds no more messages than
it runs). A worker killed outright leaves its message unacked in Redis; after the visibility
timeout another worker receives it. Tasks must therefore be idempotent (tasks/ makes them so).
"""

from __future__ import annotations

from celery import Celery
from celery.signals import setup_logging, worker_init, worker_shutdown
from kombu import Queue

from logship import start_log_shipping, stop_log_shipping
from settings import Settings, configure_logging, get_settings, settings_or_exit
from tasks.processors import PROCESSORS
from worker.kombu_patches import patch_closed_channel_connparams
from worker.log_bodies import CeleryBodyFilter

# Before any connection exists: a worker must outlive a broker outage (see kombu_patches.py).
patch_closed_channel_connparams()

# The queue for anything not routed elsewhere (ping, internal chores).
DEFAULT_QUEUE = "conduit"
# Task modules the worker imports at start; each later component adds its own.
TASK_MODULES = [
    "worker.diagnostics",
    "worker.observability",
    "tasks.processors",
    "tasks.ai_tasks",
    "tasks.search_tasks",
]


def queue_names(settings: Settings) -> list[str]:
    """Every queue a worker consumes: the default one and one per processor (see
    tasks/processors/registry.py: a processor's queue is its name)."""
    return [DEFAULT_QUEUE, *sorted(set(PROCESSORS) | {r.processor for r in settings.routes})]


def create_celery(settings: Settings) -> Celery:
    visibility = settings.broker_visibility_timeout_s
    if visibility is None:  # settings fill it in (task time limit + 5 min); this tells mypy so
        raise ValueError("BROKER_VISIBILITY_TIMEOUT_SECONDS is unset after validation")
    transport_options = {
        "visibility_timeout": visibility,
        # kombu sweeps for abandoned messages every 10 s but scans only every 10th sweep; one
        # ZRANGE per sweep is cheap, and a dead worker's task then waits no longer than needed.
        "unacked_restore_interval": max(1, min(10, visibility // 2)),
        "unacked_restore_throttle": 1,
    }
    app = Celery("conduit", include=TASK_MODULES)
    app.conf.update(
        broker_url=settings.broker_url,
        result_backend=settings.broker_url,
        broker_transport_options=transport_options,
        result_backend_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        # JSON only: pickle would let whoever can write to Redis run code in the worker.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.task_time_limit_s,
        result_expires=settings.result_expires_s,
        result_extended=True,
        task_track_started=True,
        task_default_queue=DEFAULT_QUEUE,
        task_queues=[Queue(name) for name in queue_names(settings)],
        worker_pool=settings.worker_pool,
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    return app


@setup_logging.connect
def _use_conduit_logging(**_: object) -> None:
    # Connecting this signal stops Celery from installing its own handlers on the root logger.
    # Celery's lines quote message bodies; the worker logs their sizes instead.
    configure_logging(get_settings(), extra_filters=[CeleryBodyFilter()])


# Rotated logs of LOG_DIR go to Blob Storage while the worker runs (logship/).
worker_init.connect(lambda **_: start_log_shipping(get_settings()), weak=False)
worker_shutdown.connect(lambda **_: stop_log_shipping(), weak=False)

# `celery -A worker` imports this: a wrong setting ends it with one line, not a traceback.
app = create_celery(settings_or_exit("worker"))
