"""A worker outlives a broker outage on its own: no supervisor restarts it (issue 10.14).

kombu 5.7's Redis transport raised an AttributeError while restoring unacked messages on a
connection that had just died, and the worker exited. Here Redis is stopped and started again
on the same port and the *same* worker process must answer a ping and run a task afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from settings import get_settings
from settings.redis_server import RedisServer
from tests.support.processes import ManagedProcess, celery_worker_args

# A cold celery start and a reconnect with kombu's backoff take a while on a loaded machine.
RECOVERY_TIMEOUT_SECS = 90.0
# A ping still running when Redis stops.
IN_FLIGHT_SECS = 10.0


@pytest.fixture
def own_redis(
    conduit_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RedisServer]:
    """A Redis of this test's own, since the test stops it (the session's one must stay up);
    set up after ``conduit_env``, so REDIS_URL points here."""
    server = RedisServer(tmp_path / "redis").start()
    monkeypatch.setenv("REDIS_URL", server.url)
    conduit_env["REDIS_URL"] = server.url
    yield server
    server.stop()


def _wait_for(check: Callable[[], bool], what: str, worker: ManagedProcess) -> None:
    worker.wait_until(check, RECOVERY_TIMEOUT_SECS, what)


@pytest.mark.slow
def test_the_same_worker_runs_tasks_again_after_redis_comes_back(
    own_redis: RedisServer, conduit_env: dict[str, str], tmp_path: Path
) -> None:
    from worker import create_celery

    get_settings.cache_clear()
    app = create_celery(get_settings())
    hostname = "outage@test"
    worker = ManagedProcess(
        celery_worker_args(hostname, 2),
        conduit_env,
        tmp_path / "worker.log",
        ready=lambda: bool(app.control.ping(destination=[hostname], timeout=0.5)),
        name="celery worker",
    )
    try:
        worker.start()
        pid_before = app.send_task("worker.ping").get(timeout=30)["pid"]
        # A task in flight when Redis goes: its unacked message is what kombu restores on the
        # way down, where 5.7 raised.
        in_flight = app.send_task("worker.ping", kwargs={"delay_s": IN_FLIGHT_SECS})
        worker.wait_until(
            lambda: in_flight.id in worker.output(), RECOVERY_TIMEOUT_SECS, "the slow ping to start"
        )

        own_redis.stop()
        # The outage lasts until the worker has lost the broker and failed to reconnect once
        # (wait_until fails the test if the worker exits meanwhile).
        worker.wait_until(
            lambda: (
                "Cannot connect to" in worker.output().split("Connection to broker lost")[-1]
                and "Connection to broker lost" in worker.output()
            ),
            RECOVERY_TIMEOUT_SECS,
            "the worker to lose the broker and fail to reconnect",
        )
        own_redis.start()

        # A new client: this one's result consumer gave up during the outage (a client-side
        # matter; the worker is what must recover by itself).
        app.close()
        app = create_celery(get_settings())
        _wait_for(
            lambda: bool(app.control.ping(destination=[hostname], timeout=1.0)),
            "the worker to answer ping after Redis came back",
            worker,
        )
        answer = app.send_task("worker.ping").get(timeout=RECOVERY_TIMEOUT_SECS)
        assert answer["pid"] == pid_before, "a different process answered"
        # The task that was running through the outage finished and stored its result.
        assert app.AsyncResult(in_flight.id).get(timeout=RECOVERY_TIMEOUT_SECS)["pong"]
        assert worker.process is not None and worker.process.poll() is None
    finally:
        worker.stop()
        app.close()
    output = worker.output()
    assert "Unrecoverable error" not in output and "AttributeError" not in output
