"""``/ready``: ready only while Redis, the broker, a bridge and a worker are all there, and
unready, saying why, the moment Redis goes away."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from settings import load_settings
from settings.redis_server import RedisServer
from tests.support.processes import ManagedProcess, python_args
from web.app import create_app


def failing(answer) -> set[str]:
    return {name for name, check in answer.json["checks"].items() if not check["ok"]}


@pytest.mark.slow
def test_ready_follows_redis_bridge_and_workers(conduit_env, tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis").start()
    env = {**conduit_env, "REDIS_URL": redis_server.url}
    app = create_app(load_settings(auth_disabled=True, redis_url=redis_server.url))
    client = app.test_client()
    processes: list[ManagedProcess] = []
    try:
        alone = client.get("/ready")
        assert alone.status_code == 503
        assert failing(alone) == {"bridge", "workers"}
        assert alone.json["checks"]["redis"]["ok"]

        name = f"ready-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        processes.append(
            ManagedProcess(
                python_args(
                    "-m",
                    "celery",
                    "-A",
                    "worker",
                    "worker",
                    "-P",
                    "threads",
                    "-c",
                    "2",
                    "-n",
                    name,
                    "--without-gossip",
                    "--without-mingle",
                ),
                env,
                tmp_path / "worker.log",
                name="worker",
            ).start()
        )
        processes.append(
            ManagedProcess(
                python_args("-m", "bridge"), env, tmp_path / "bridge.log", name="bridge"
            ).start()
        )
        processes[0].wait_until(
            lambda: client.get("/ready").status_code == 200, 60, "/ready to say ready"
        )
        ready = client.get("/ready").json
        assert ready["ready"] is True
        assert set(ready["checks"]) == {"redis", "broker", "bridge", "workers"}

        redis_server.stop()
        gone = client.get("/ready")
        assert gone.status_code == 503
        assert {"redis", "broker"} <= failing(gone)
        assert "ConnectionError" in gone.json["checks"]["redis"]["detail"]
    finally:
        for process in processes:
            process.stop()
        redis_server.stop()
