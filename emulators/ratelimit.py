"""Azure OpenAI's per-deployment rate limits, re-implemented small and in memory.

This stands for Azure, so it shares no code with quota/ (the limiter under test): a benchmark
that counts the 429s served here measures quota/ against an independent judge.

What Azure documents ("Azure OpenAI quota management", "rate limits" in the Azure OpenAI docs)
and what this module does about it:

* **Limits are per deployment**, tokens per minute (TPM) and requests per minute (RPM).
  → :class:`Limit` per deployment, loaded by :func:`load_limits`.
* **Tokens are counted at arrival from an estimate**: the prompt's tokens (roughly, from its
  characters) plus ``max_tokens``; the estimate is not refunded when the answer is shorter.
  → callers :meth:`RateLimiter.charge` an estimate before doing any work; nothing is refunded.
* **Requests that fail still count** once admitted. → the charge precedes validation, faults
  and the answer; only a request refused with 429 is not charged (it was not accepted).
* **TPM over a 60 s window, RPM over a shorter one**: Azure evaluates requests "over small
  periods of time, typically 1 or 10 seconds", allowing RPM/6 per 10 s. → a sliding token window
  of ``window`` seconds (60 by default) and a sliding request window of ``window / 6`` seconds
  that admits ``max(1, RPM // 6)`` requests, so even a small RPM admits something.
* **429 carries retry-after** (whole seconds) and ``retry-after-ms``, plus the
  ``x-ratelimit-remaining-{tokens,requests}`` headers Azure sends on every answer.
  → :meth:`Decision.headers`; ``x-ratelimit-limit-*`` and ``x-ratelimit-reset-*`` follow OpenAI's
  shape (``reset`` as a duration like ``"1.5s"``). The request headers describe the request
  window (limit ``RPM // 6`` per ``window / 6`` s), because that is the window that refuses.
* **A deployment with no token limit** (Whisper is limited by requests only) has ``tpm = 0``:
  tokens are counted but never refused.

The window is exact (a log of charges, not buckets): an emulator's load is small, and an exact
judge leaves no doubt about who over-spent.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from settings import Settings

# Azure evaluates requests over a sixth of the token window (10 s of 60 s).
REQUEST_WINDOW_FRACTION = 6


@dataclass(frozen=True)
class Limit:
    tpm: int  # 0: tokens are not limited
    rpm: int

    @property
    def requests_per_window(self) -> int:
        return max(1, self.rpm // REQUEST_WINDOW_FRACTION)


class LimitsFileError(ValueError):
    """The limits file cannot be used; the message names the file and the fault."""


def load_limits(settings: Settings) -> dict[str, Limit]:
    """Per-deployment limits: EMULATOR_LIMITS_FILE if set, else the quotas of Settings.pools()."""
    if not settings.emulator_limits_file:
        return {pool.deployment: Limit(tpm=pool.tpm, rpm=pool.rpm) for pool in settings.pools()}
    path = Path(settings.emulator_limits_file)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return {
            deployment: Limit(tpm=int(values.get("tpm", 0)), rpm=int(values["rpm"]))
            for deployment, values in document.items()
        }
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as error:
        raise LimitsFileError(
            f'EMULATOR_LIMITS_FILE={path}: expected {{"deployment": {{"tpm": int, '
            f'"rpm": int}}}} ({type(error).__name__}: {error})'
        ) from None


@dataclass(frozen=True)
class Decision:
    admitted: bool
    limit: Limit
    remaining_tokens: int
    remaining_requests: int
    reset_tokens_s: float
    reset_requests_s: float
    retry_after_s: float  # 0 when admitted
    reason: str  # "tokens" or "requests" when refused, "" when admitted

    def headers(self) -> dict[str, str]:
        headers = {
            "x-ratelimit-limit-requests": str(self.limit.requests_per_window),
            "x-ratelimit-remaining-requests": str(self.remaining_requests),
            "x-ratelimit-reset-requests": _duration(self.reset_requests_s),
        }
        if self.limit.tpm:
            headers |= {
                "x-ratelimit-limit-tokens": str(self.limit.tpm),
                "x-ratelimit-remaining-tokens": str(self.remaining_tokens),
                "x-ratelimit-reset-tokens": _duration(self.reset_tokens_s),
            }
        if not self.admitted:
            headers |= {
                "retry-after": str(max(1, math.ceil(self.retry_after_s))),
                "retry-after-ms": str(max(1, math.ceil(self.retry_after_s * 1000))),
            }
        return headers


def _duration(seconds: float) -> str:
    """OpenAI's reset format: "850ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{int(rest)}s"


class _DeploymentWindow:
    """The charges one deployment received inside its windows: (arrival, tokens) oldest first."""

    def __init__(self) -> None:
        self.tokens: deque[tuple[float, int]] = deque()
        self.requests: deque[float] = deque()


class RateLimiter:
    """Admit or refuse requests per deployment; safe to call from any number of threads."""

    def __init__(
        self,
        limits: dict[str, Limit],
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.token_window_s = window_s
        self.request_window_s = window_s / REQUEST_WINDOW_FRACTION
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, _DeploymentWindow] = {}

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()

    def charge(self, deployment: str, tokens: int) -> Decision:
        """Admit and charge ``tokens`` plus one request, or refuse and charge nothing."""
        limit = self.limits[deployment]
        with self._lock:
            now = self._clock()
            window = self._windows.setdefault(deployment, _DeploymentWindow())
            self._expire(window, now)
            used_tokens = sum(charged for _, charged in window.tokens)
            retry_after, reason = 0.0, ""
            if len(window.requests) >= limit.requests_per_window:
                retry_after, reason = window.requests[0] + self.request_window_s - now, "requests"
            elif limit.tpm and used_tokens + tokens > limit.tpm:
                retry_after = self._token_wait(window, limit, tokens, used_tokens, now)
                reason = "tokens"
            else:
                window.tokens.append((now, tokens))
                window.requests.append(now)
                used_tokens += tokens
            return Decision(
                admitted=not reason,
                limit=limit,
                remaining_tokens=max(0, limit.tpm - used_tokens),
                remaining_requests=limit.requests_per_window - len(window.requests),
                reset_tokens_s=(
                    window.tokens[0][0] + self.token_window_s - now if window.tokens else 0.0
                ),
                reset_requests_s=(
                    window.requests[0] + self.request_window_s - now if window.requests else 0.0
                ),
                retry_after_s=retry_after,
                reason=reason,
            )

    def _expire(self, window: _DeploymentWindow, now: float) -> None:
        while window.tokens and window.tokens[0][0] <= now - self.token_window_s:
            window.tokens.popleft()
        while window.requests and window.requests[0] <= now - self.request_window_s:
            window.requests.popleft()

    def _token_wait(
        self, window: _DeploymentWindow, limit: Limit, tokens: int, used: int, now: float
    ) -> float:
        """Seconds until enough old charges leave the window for ``tokens`` to fit."""
        if tokens > limit.tpm:
            # Larger than a whole window's allowance: it never fits, as on Azure.
            return self.token_window_s
        for arrival, charged in window.tokens:
            used -= charged
            if used + tokens <= limit.tpm:
                return arrival + self.token_window_s - now
        return self.token_window_s
