"""What the monitor has uploaded and what it is uploading now: a small JSON file in the log dir.

``.logship-state.json`` holds, per rotated file name, either an upload record (blob name, size,
MD5, when) or a claim (who is uploading it, until when). Every read-modify-write happens under an
exclusive ``flock`` on ``.logship.lock``, so processes sharing a log directory (gunicorn workers,
a worker and a bridge on one volume) see each other's claims and records, and only one uploads a
file. The state is replaced atomically (write a temporary file, then rename), so a crash mid-write
leaves the previous state, never half of one.

A claim expires (``CLAIM_LEASE_SECS``) so a process killed while uploading does not hold its files
forever; a claim by a process of this host that no longer exists ends at once. Even when two
uploads of one file do overlap, the uploader's If-None-Match write lets only one of them land.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = ".logship-state.json"
LOCK_FILE = ".logship.lock"
# Longer than an upload takes with all its retries (16 attempts, waits capped at a minute).
CLAIM_LEASE_SECS = 30 * 60
STATE_VERSION = 1


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class State:
    """The parsed state file: ``uploaded`` and ``claims``, both keyed by file name."""

    uploaded: dict[str, dict[str, Any]] = field(default_factory=dict)
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)

    def claimed_by_other(self, name: str, owner: str, now: float) -> bool:
        claim = self.claims.get(name)
        if claim is None or claim.get("owner") == owner:
            return False
        if float(claim.get("until", 0)) <= now:
            return False
        if claim.get("host") == socket.gethostname() and not _process_alive(int(claim["pid"])):
            return False
        return True


class StateStore:
    """The state file of one log directory; :meth:`locked` yields it for changing."""

    def __init__(self, logs_dir: str | Path) -> None:
        self.dir = Path(logs_dir)
        self.path = self.dir / STATE_FILE
        self.lock_path = self.dir / LOCK_FILE
        # Unique per monitor, not per process: two monitors in one process are two claimants.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def claim(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "until": time.time() + CLAIM_LEASE_SECS,
        }

    @contextlib.contextmanager
    def locked(self) -> Iterator[State]:
        """The current state, under the directory's lock; changes are saved when the block ends
        without an error."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self.read()
                yield state
                self._write(state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self) -> State:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return State()
        except (ValueError, OSError):
            # A state file we cannot read must not stop shipping; the uploader's MD5 check keeps
            # a file already uploaded from being written twice, so starting afresh is safe.
            return State()
        return State(uploaded=dict(data.get("uploaded", {})), claims=dict(data.get("claims", {})))

    def _write(self, state: State) -> None:
        payload = {"version": STATE_VERSION, "uploaded": state.uploaded, "claims": state.claims}
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(payload, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(temporary, self.path)
