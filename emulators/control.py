"""What the dev-only control endpoints change and report: latency, faults, counters.

``/_emulator/config`` reads and updates :class:`Controls` (validated, replaced whole, so a
request thread always sees one consistent set); ``/_emulator/stats`` reports :class:`Stats`.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from settings import Settings


class Controls(BaseModel):
    """Simulated model speed and injected faults; every field has its EMULATOR_* setting."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    first_token_ms: float = Field(0.0, ge=0)
    token_ms: float = Field(0.0, ge=0)
    error_rate: float = Field(0.0, ge=0, le=1)
    error_status: Literal[500, 503] = 503
    stall_rate: float = Field(0.0, ge=0, le=1)
    stall_s: float = Field(600.0, ge=0)

    @classmethod
    def from_settings(cls, settings: Settings) -> Controls:
        return cls(
            first_token_ms=settings.emulator_first_token_ms,
            token_ms=settings.emulator_token_ms,
            error_rate=settings.emulator_error_rate,
            error_status=settings.emulator_error_status,
            stall_rate=settings.emulator_stall_rate,
            stall_s=settings.emulator_stall_s,
        )

    def updated(self, changes: dict[str, object]) -> Controls:
        """A validated copy with ``changes`` applied; raises pydantic's ValidationError."""
        return Controls.model_validate(self.model_dump() | changes)


@dataclass
class DeploymentStats:
    requests: int = 0  # every authenticated request for the deployment
    admitted: int = 0
    throttled: int = 0  # 429s served
    tokens_charged: int = 0
    faults: int = 0  # injected errors and stalls
    # Admitted requests whose body had been admitted before (same route, same bytes): work a
    # client paid for twice. Benchmarks report it; a client that never re-sends keeps it at 0.
    repeated_requests: int = 0


# A client that says when it counted a request (wall-clock µs since the epoch), as the quota
# benchmark's probe does, learns from the stats how much later the request was charged here.
STAMP_HEADER = "x-conduit-stamp-us"
# Stamp lags kept (the newest): a benchmark's few thousand requests, a few hundred kB at most.
MAX_STAMP_LAGS = 100_000


class Stats:
    """Counters per deployment, safe to update from any request thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deployments: dict[str, DeploymentStats] = {}
        # How long after the client counted a request (its x-conduit-stamp-us header, wall-clock
        # µs) the request was charged here, in µs: the judge of a client's upstream margin.
        self._stamp_lags_us: deque[int] = deque(maxlen=MAX_STAMP_LAGS)
        # Digests of admitted request bodies (32 bytes each; a benchmark's tens of thousands of
        # requests are a few MB), forgotten on reset.
        self._admitted_digests: set[bytes] = set()

    def _entry(self, deployment: str) -> DeploymentStats:
        return self._deployments.setdefault(deployment, DeploymentStats())

    def record_charge(
        self, deployment: str, admitted: bool, tokens: int, body_digest: bytes | None = None
    ) -> None:
        """Count one request; ``body_digest`` (of route and body) detects repeats."""
        with self._lock:
            entry = self._entry(deployment)
            entry.requests += 1
            if admitted:
                entry.admitted += 1
                entry.tokens_charged += tokens
                if body_digest is not None:
                    if body_digest in self._admitted_digests:
                        entry.repeated_requests += 1
                    else:
                        self._admitted_digests.add(body_digest)
            else:
                entry.throttled += 1

    def record_stamp_lag(self, lag_us: int) -> None:
        with self._lock:
            self._stamp_lags_us.append(lag_us)

    def stamp_lags_ms(self) -> dict[str, float | int]:
        """The stamp-to-charge lags recorded since the reset: count, p50, p99 and max (ms)."""
        with self._lock:
            lags = sorted(self._stamp_lags_us)
        if not lags:
            return {"count": 0}

        def at(fraction: float) -> float:
            return round(lags[min(len(lags) - 1, int(fraction * len(lags)))] / 1000, 2)

        return {
            "count": len(lags),
            **{f"p{round(q * 100)}": at(q) for q in (0.5, 0.9, 0.99)},
            "max": at(1.0),
        }

    def record_fault(self, deployment: str) -> None:
        with self._lock:
            self._entry(deployment).faults += 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {name: asdict(entry) for name, entry in self._deployments.items()}

    def reset(self) -> None:
        with self._lock:
            self._deployments.clear()
            self._admitted_digests.clear()
            self._stamp_lags_us.clear()
