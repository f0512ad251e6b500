"""What every benchmark ends with: a JSON file of its figures and one summary line."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).parent / "results"


def machine() -> dict[str, object]:
    """The facts a reader needs to compare runs: cores, Python, when."""
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` fall (nearest rank); 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[rank]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def write_result(name: str, figures: dict[str, object], summary: str) -> Path:
    """Write bench/results/<name>.json (figures + machine facts) and print the summary line."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({**machine(), **figures}, indent=2, sort_keys=True) + "\n")
    print(f"{name}: {summary} ({os.cpu_count()} cores) -> {path}")
    return path
