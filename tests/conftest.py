"""Fixtures shared by every test: a real embedded Redis, real Celery workers, and leak checks.

Unit tests need none of these. Integration tests ask for ``redis_url`` (a flushed database on
the session's redis-server), ``conduit_env`` (the environment a subprocess of ours needs) and
``start_worker`` (a real ``celery worker`` subprocess, stopped after the test).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import redis

# Before anything reads settings: a developer's .env must not change what the tests see.
os.environ["CONDUIT_ENV_FILE"] = os.devnull
os.environ.setdefault("LOG_FORMAT", "json")

from settings import get_settings, load_settings
from settings.redis_server import RedisServer, free_port
from settings.state_redis import state_redis
from tests.support.acs_emulator import AcsEmulatorStarter, RunningAcsEmulator
from tests.support.azurite import AzuriteServer, require_node, running_azurite
from tests.support.calls_web import CallsWebStarter
from tests.support.cluster import RedisClusterServers
from tests.support.emulator import EmulatorStarter, RunningEmulator
from tests.support.processes import ManagedProcess, celery_worker_args, python_args


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """Each test reads settings anew from its (monkeypatched) environment."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a child process or a non-daemon thread running."""
    me = psutil.Process()
    children_before = {p.pid for p in me.children(recursive=True)}
    threads_before = set(threading.enumerate())
    yield
    leaked_children = [
        p
        for p in me.children(recursive=True)
        if p.pid not in children_before and p.status() != psutil.STATUS_ZOMBIE
    ]
    leaked_threads = [
        t
        for t in threading.enumerate()
        if t not in threads_before and t.is_alive() and not t.daemon
    ]
    assert not leaked_children, f"test leaked processes: {[p.cmdline() for p in leaked_children]}"
    assert not leaked_threads, f"test leaked threads: {leaked_threads}"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """For a test that configures logging as a process does: pytest's own root handlers and
    level are put back after it, whatever it configured."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)


@pytest.fixture(scope="session")
def tiktoken_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from settings.tiktoken_offline import seed_tiktoken_cache

    return seed_tiktoken_cache(tmp_path_factory.mktemp("tiktoken"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A URL to the session's redis-server, emptied for this test and exported as REDIS_URL."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    yield redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A real three-master Redis Cluster (tests/support/cluster.py), started once per session."""
    with RedisClusterServers(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture
def state_url(
    request: pytest.FixtureRequest,
    redis_url: str,
    redis_cluster: RedisClusterServers,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """Where this test's Conduit state lives (settings/state_redis.py). Parametrize it
    indirectly: ``"plain"`` (the default) is the broker's Redis itself; ``"cluster"`` is the
    session's Redis Cluster, emptied for this test and exported as STATE_REDIS_URL, while the
    broker stays on ``redis_url``. (The cluster is asked for either way: a session fixture
    started lazily, inside a test, would look like a process that test leaked.)"""
    if getattr(request, "param", "plain") == "plain":
        return redis_url
    cluster = redis_cluster
    client = cluster.client()
    client.flushall(target_nodes=client.PRIMARIES)
    client.close()
    url = cluster.url.replace("redis://", "redis+cluster://", 1)
    monkeypatch.setenv("STATE_REDIS_URL", url)
    get_settings.cache_clear()
    return url


@pytest.fixture
def state_client(state_url: str) -> Iterator[redis.Redis]:
    """A decoding client on :func:`state_url` (a RedisCluster there)."""
    client = state_redis(load_settings(state_redis_url=state_url), decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def conduit_env(redis_url: str, tiktoken_cache: Path) -> dict[str, str]:
    """Environment for a Conduit subprocess; tests add their own keys before starting it."""
    env = dict(os.environ)
    env.update(REDIS_URL=redis_url, TIKTOKEN_CACHE_DIR=str(tiktoken_cache), PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def celery_app(redis_url: str):
    """A client-side Celery app bound to the test Redis (for sending tasks and control calls)."""
    from worker import create_celery

    app = create_celery(get_settings())
    yield app
    app.close()


@pytest.fixture
def start_worker(
    celery_app, conduit_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., ManagedProcess]]:
    """Start real ``celery -A worker worker`` processes; each is stopped after the test."""
    started: list[ManagedProcess] = []

    def start(concurrency: int = 4, queues: str | None = None, **env: str) -> ManagedProcess:
        name = f"test-{uuid.uuid4().hex[:8]}@%h"
        args = celery_worker_args(name, concurrency, *(["-Q", queues] if queues else []))
        hostname = name.replace("%h", __import__("socket").gethostname())

        def ready() -> bool:
            return bool(celery_app.control.ping(destination=[hostname], timeout=0.5))

        process = ManagedProcess(
            args,
            {**conduit_env, **env},
            tmp_path / f"{name}.log",
            ready=ready,
            name=f"celery worker {hostname}",
        )
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def start_web(conduit_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start the web app under gunicorn (as the Procfile does) on a free port; yields its URL."""
    started: list[ManagedProcess] = []

    def start(**env: str) -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = ManagedProcess(
            python_args("-m", "gunicorn", "-c", "python:web.gunicorn_conf", "web.app:create_app()"),
            {**conduit_env, "WEB_PORT": str(port), "AUTH_DISABLED": "true", **env},
            tmp_path / f"web-{port}.log",
            ready=lambda: httpx.get(f"{url}/health", timeout=1).status_code == 200,
            name="gunicorn web",
        )
        started.append(process.start())
        return url

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def start_emulator(
    tiktoken_cache: Path, tmp_path: Path
) -> Iterator[Callable[..., RunningEmulator]]:
    """Start ``python -m emulators`` on a free port: ``start_emulator(limits=..., **env)``.

    See tests/support/emulator.py for the returned handle (SDK clients, controls, client_env).
    """
    starter = EmulatorStarter(tmp_path, {"TIKTOKEN_CACHE_DIR": str(tiktoken_cache)})
    yield starter
    starter.close()


@pytest.fixture(scope="module")
def module_emulator_starter(
    tiktoken_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmulatorStarter]:
    """Like ``start_emulator``, but what it starts lives for the whole test module (for modules
    whose tests share one emulator and reset it between them)."""
    starter = EmulatorStarter(
        tmp_path_factory.mktemp("emulator"), {"TIKTOKEN_CACHE_DIR": str(tiktoken_cache)}
    )
    yield starter
    starter.close()


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Azurite's connection string, for the module's tests; stopped after them. Without Node.js
    the tests are skipped on a laptop, but fail on CI, where a skip would hide an untested path."""
    require_node()
    with running_azurite(tmp_path_factory.mktemp("azurite")) as connection_string:
        yield connection_string


@pytest.fixture(scope="module")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """Like ``azurite``, with the access log readable (tests that count writes to blobs)."""
    require_node()
    log_dir = tmp_path_factory.mktemp("azurite")
    with running_azurite(log_dir) as connection_string:
        yield AzuriteServer(connection_string, log_dir / "azurite.log")


@pytest.fixture
def start_acs_emulator(tmp_path: Path) -> Iterator[Callable[..., RunningAcsEmulator]]:
    """Start ``python -m emulators.acs`` on a free port (HTTPS, its own certificate and JWT key):
    ``start_acs_emulator(**env)``. See tests/support/acs_emulator.py for the returned handle."""
    starter = AcsEmulatorStarter(tmp_path, {})
    yield starter
    starter.close()


@pytest.fixture(scope="module")
def module_acs_emulator_starter(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AcsEmulatorStarter]:
    """Like ``start_acs_emulator``, for modules whose tests share one ACS emulator."""
    starter = AcsEmulatorStarter(tmp_path_factory.mktemp("acs"), {})
    yield starter
    starter.close()


@pytest.fixture(scope="module")
def calls_acs(module_acs_emulator_starter: AcsEmulatorStarter) -> RunningAcsEmulator:
    """One ACS emulator for a call-control test module."""
    return module_acs_emulator_starter()


@pytest.fixture(scope="module")
def calls_llm(module_emulator_starter: EmulatorStarter) -> RunningEmulator:
    """One OpenAI emulator for a call-control test module (the agent's LLM)."""
    return module_emulator_starter()


@pytest.fixture
def start_calls_web(
    conduit_env: dict[str, str],
    tmp_path: Path,
    calls_acs: RunningAcsEmulator,
    calls_llm: RunningEmulator,
) -> Iterator[CallsWebStarter]:
    """Start Conduit's web app under gunicorn wired to both emulators
    (tests/support/calls_web.py)."""
    starter = CallsWebStarter(conduit_env, tmp_path, calls_acs, calls_llm)
    yield starter
    starter.close()
