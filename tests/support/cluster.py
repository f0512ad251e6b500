"""A real Redis Cluster for tests: three masters from the same ``redis-server`` binary the rest of
the suite uses, joined by ``redis-cli --cluster create``.

    with RedisClusterServers(tmp_path) as cluster:
        client = redis.cluster.RedisCluster.from_url(cluster.url)

No replicas: the tests are about where keys live and that every script touches one slot, not
about fail-over. Each node gets a free port and its cluster bus on port + 10000, which must be
free too, so ports are drawn until both are.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

import redis
import redis.cluster

from settings.redis_server import RedisServerError, find_redis_server, free_port, port_in_use

NODES = 3
# A loaded machine may take a while to start three servers and agree on slots.
START_TIMEOUT_SECS = 30.0
STOP_TIMEOUT_SECS = 10.0
# Redis's cluster bus listens on the client port plus this.
BUS_PORT_OFFSET = 10000
POLL_SECS = 0.05


def _node_port() -> int:
    while True:
        port = free_port()
        if port + BUS_PORT_OFFSET < 65536 and not port_in_use(port + BUS_PORT_OFFSET):
            return port


def _redis_cli(server_binary: str) -> str:
    cli = Path(server_binary).with_name("redis-cli")
    if not cli.exists():
        raise RedisServerError(f"no redis-cli beside {server_binary}: the cluster needs it")
    return str(cli)


class RedisClusterServers:
    """Three cluster-enabled redis-server processes holding all 16384 slots between them."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.binary = find_redis_server()
        self.ports = [_node_port() for _ in range(NODES)]
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """A seed URL: redis-py's RedisCluster discovers the other nodes from it."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> RedisClusterServers:
        try:
            for port in self.ports:
                self._processes.append(self._start_node(port))
            for port in self.ports:
                self._wait(partial(self._answers_ping, port), f"node {port} PING")
            subprocess.run(
                [
                    _redis_cli(self.binary),
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{port}" for port in self.ports),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=START_TIMEOUT_SECS,
            )
            self._wait(self._all_slots_served, "cluster_state:ok on every node")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, port: int) -> subprocess.Popen[bytes]:
        node_dir = self.data_dir / f"node-{port}"
        node_dir.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(
            [
                self.binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(node_dir),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
                "--save",
                "",
                "--appendonly",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @staticmethod
    def _answers_ping(port: int) -> bool:
        client = redis.Redis(port=port)
        try:
            return bool(client.ping())
        finally:
            client.close()

    def _all_slots_served(self) -> bool:
        for port in self.ports:
            client = redis.Redis(port=port)
            try:
                # redis-py types a reply "maybe awaitable"; on this sync client it is the dict.
                info = cast(dict[str, Any], client.cluster("info"))
                if info.get("cluster_state") != "ok":
                    return False
            finally:
                client.close()
        return True

    def _wait(self, check: Callable[[], object], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while time.monotonic() < deadline:
            if any(process.poll() is not None for process in self._processes):
                raise RedisServerError(f"a cluster node exited while waiting for {what}")
            try:
                if check():
                    return
            except redis.RedisError:
                pass
            time.sleep(POLL_SECS)
        raise RedisServerError(f"Redis Cluster: no {what} within {START_TIMEOUT_SECS} s")

    def client(self) -> redis.cluster.RedisCluster:
        return redis.cluster.RedisCluster.from_url(self.url)

    def stop(self) -> None:
        processes, self._processes = self._processes, []
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(STOP_TIMEOUT_SECS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def on_plain_and_cluster(metafunc: Any) -> None:
    """For a test module's ``pytest_generate_tests``: each test that uses ``state_url`` (or
    ``state_client``) runs twice, with the state on the broker's plain Redis and on the
    session's three-master cluster (tests/conftest.py)."""
    if "state_url" in metafunc.fixturenames:
        metafunc.parametrize("state_url", ["plain", "cluster"], indirect=True)
