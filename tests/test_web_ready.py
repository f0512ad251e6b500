"""``/ready``: ready only while Redis, the broker, a bridge, a worker and the Azure OpenAI
endpoint (here the emulator) are all there, and unready, saying why and where, the moment one
goes away."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from settings import load_settings
from settings.redis_server import RedisServer, free_port
from tests.support.processes import ManagedProcess, python_args
from web.app import create_app


def failing(answer) -> set[str]:
    return {name for name, check in answer.json["checks"].items() if not check["ok"]}


@pytest.mark.slow
def test_ready_follows_redis_bridge_and_workers(
    conduit_env, start_emulator, tmp_path: Path
) -> None:
    emulator = start_emulator()
    redis_server = RedisServer(tmp_path / "redis").start()
    env = {**conduit_env, "REDIS_URL": redis_server.url}
    app = create_app(
        load_settings(auth_disabled=True, redis_url=redis_server.url, emulator_port=emulator.port)
    )
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
        assert set(ready["checks"]) == {"redis", "broker", "bridge", "workers", "upstream"}
        assert emulator.url in ready["checks"]["upstream"]["detail"]

        emulator.process.stop()
        upstream_gone = client.get("/ready")
        assert upstream_gone.status_code == 503
        assert failing(upstream_gone) == {"upstream"}
        assert (
            f"{emulator.url} (EMULATOR_HOST/EMULATOR_PORT"
            in (upstream_gone.json["checks"]["upstream"]["detail"])
        )

        redis_server.stop()
        gone = client.get("/ready")
        assert gone.status_code == 503
        assert {"redis", "broker"} <= failing(gone)
        assert "ConnectionError" in gone.json["checks"]["redis"]["detail"]
    finally:
        for process in processes:
            process.stop()
        redis_server.stop()


def test_ready_names_an_unreachable_openai_endpoint_and_its_setting(redis_url) -> None:
    """A wrong APP_OPENAI_API_BASE makes /ready say so at once, naming the URL and the variable,
    instead of tasks failing minutes later."""
    wrong = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    embedding = f"http://127.0.0.1:{free_port()}"
    app = create_app(
        load_settings(
            auth_disabled=True,
            redis_url=redis_url,
            openai_api_base=wrong,
            embedding_api_base=embedding,
        )
    )
    answer = app.test_client().get("/ready")
    assert answer.status_code == 503
    check = answer.json["checks"]["upstream"]
    assert not check["ok"]
    assert f"{wrong} (APP_OPENAI_API_BASE) unreachable: ConnectError" in check["detail"]
    assert f"{embedding} (APP_EMBEDDING_API_BASE) unreachable" in check["detail"]
    assert answer.json["checks"]["redis"]["ok"]
