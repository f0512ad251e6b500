"""Calling Conduit's tasks from Python: know in seconds, from one clear line, that nothing would
answer, instead of a ``.get(timeout=...)`` that waits it out.

    from worker import app
    from worker.client import require_worker

    require_worker()  # NoWorkerError: "no Celery worker answered a ping on redis://..."
    app.send_task("worker.ping").get(timeout=10)

/ready (web/health.py) uses the same two checks.
"""

from __future__ import annotations

from celery import Celery

from worker.celery_app import app as default_app

# Redis on this machine or in this virtual network connects in milliseconds.
BROKER_CONNECT_TIMEOUT_SECS = 2.0
# A live worker answers a broadcast ping within a few hundred milliseconds, even when busy.
WORKER_PING_TIMEOUT_SECS = 1.0


class NoWorkerError(RuntimeError):
    """Nothing would run a task sent now: the broker does not answer, or no worker does."""


def broker_uri(app: Celery) -> str:
    """The broker's address with any password masked (kombu masks it), for messages."""
    with app.connection_for_write() as connection:
        return str(connection.as_uri())


def check_broker(app: Celery) -> None:
    """Connect to the broker once, briefly; NoWorkerError saying where and why if it fails."""
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=BROKER_CONNECT_TIMEOUT_SECS)
    except Exception as error:  # noqa: BLE001 - kombu raises several kinds; all mean "down"
        raise NoWorkerError(
            f"the broker at {broker_uri(app)} does not answer ({type(error).__name__}: {error}): "
            "start the stack (make run) or set REDIS_URL to the Redis its workers use"
        ) from None


def ping_workers(app: Celery, timeout_s: float = WORKER_PING_TIMEOUT_SECS) -> int:
    """How many workers answered a ping; NoWorkerError when none did."""
    replies = app.control.ping(timeout=timeout_s)
    if not replies:
        raise NoWorkerError(
            f"no Celery worker answered a ping on {broker_uri(app)} in {timeout_s:g} s: start "
            "one (make run, or conduit-worker) on the same REDIS_URL"
        )
    return len(replies)


def require_worker(app: Celery | None = None, timeout_s: float = WORKER_PING_TIMEOUT_SECS) -> int:
    """Raise NoWorkerError unless the broker and at least one worker answer; how many did."""
    app = app or default_app
    check_broker(app)
    return ping_workers(app, timeout_s)
