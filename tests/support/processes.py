"""Start real server processes for tests and make sure each one ends.

Every integration test that needs a server (celery worker, bridge, emulator, web) starts it with
:class:`ManagedProcess`, which waits until the server is ready, keeps its output in a log file
for the failure message, and stops it (SIGTERM, then SIGKILL) however the test ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
# Long enough for a cold start of celery or librosa on a loaded 2-core CI machine.
READY_TIMEOUT_SECS = 60.0
STOP_TIMEOUT_SECS = 15.0


class ManagedProcess:
    """One child process with a readiness check; use as a context manager or call stop()."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        log_path: Path,
        ready: Callable[[], bool] | None = None,
        name: str = "process",
    ) -> None:
        self.args, self.env, self.log_path, self.ready, self.name = args, env, log_path, ready, name
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=REPO_ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if self.ready is not None:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECS) -> None:
        """Until the readiness check passes (again, after a restart of what it depends on)."""
        if self.ready is None:
            raise RuntimeError(f"{self.name} has no readiness check")
        self.wait_until(self.ready, timeout, f"{self.name} to become ready")

    def wait_until(self, check: Callable[[], object], timeout: float, what: str) -> None:
        """:func:`tests.support.waiting.wait_until` while this process runs: its exit ends the
        wait at once, and either failure shows the end of its log. Any exception from ``check``
        means "not ready yet" (a starting server refuses connections, answers 503 ...)."""
        wait_until(
            check,
            timeout,
            what,
            ignore=(Exception,),
            abort=self._exited,
            details=lambda: self.output()[-3000:],
        )

    def _exited(self) -> str | None:
        code = self.running.poll()
        return None if code is None else f"{self.name} exited ({code})"

    @property
    def running(self) -> subprocess.Popen[bytes]:
        """The child process; a RuntimeError before start()."""
        if self.process is None:
            raise RuntimeError(f"{self.name} was not started: call start() or use `with`")
        return self.process

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        return self.running.pid

    def signal(self, signum: int) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash or an OOM kill would."""
        self.signal(signal.SIGKILL)
        if self.process:
            self.process.wait()

    def stop(self, timeout: float = STOP_TIMEOUT_SECS) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        # Children the process left behind (celery pool processes) go too.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def python_args(*args: str) -> list[str]:
    """Run a module with the same interpreter (and so the same virtualenv) as the tests."""
    return [sys.executable, *args]


def celery_worker_args(
    name: str, concurrency: int, *extra: str, loglevel: str = "INFO"
) -> list[str]:
    """``celery -A worker worker`` as tests and benchmarks run it: the Procfile's thread pool,
    node ``name`` (``control.ping(destination=[name])`` tells when it is ready), and without
    gossip and mingle, start-up exchanges between workers that only slow a test down."""
    return python_args(
        *("-m", "celery", "-A", "worker", "worker", "-P", "threads", "-c", str(concurrency)),
        *("-n", name, "--without-gossip", "--without-mingle", "--loglevel", loglevel),
        *extra,
    )
