"""Counting as the workload runs: results (one per input, anything else called out) and the
most quota each pool held in its window at any moment, since the window forgets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from quota import QuotaStatus
from stack.workload import SampleMessage


class ResultTally:
    """Matches results to the inputs they answer (by the body's ``id``)."""

    def __init__(self, inputs: Iterable[SampleMessage]) -> None:
        self.inputs = {message.body["id"]: message for message in inputs}
        self.seen: Counter[str] = Counter()
        self.failed: set[str] = set()
        self.unexpected = 0

    @property
    def answered(self) -> int:
        return len(self.seen)

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.seen.values())

    @property
    def complete(self) -> bool:
        return self.answered == len(self.inputs)

    def record(self, result: dict[str, Any]) -> str:
        """Count one result; the progress line to print for it."""
        result_id = str(result.get("id"))
        if result_id not in self.inputs:
            self.unexpected += 1
            return f"  ? a result for unknown id {result_id!r}"
        self.seen[result_id] += 1
        label = self.inputs[result_id].label
        if self.seen[result_id] > 1:
            return f"  ! {label}: a second result (duplicate)"
        position = f"[{self.answered:>2}/{len(self.inputs)}]"
        if result.get("message") != "SUCCESS":
            self.failed.add(result_id)
            error = result.get("error") or {}
            return f"{position} {label}: FAILED {error.get('type')}: {error.get('detail')}"
        return f"{position} {label}: {describe(result)}"


def describe(result: dict[str, Any]) -> str:
    if "sentiment" in result:
        return f"{result['sentiment']:<8} {', '.join(result.get('categories', []))[:60]}"
    transcript = result.get("transcript")
    if isinstance(transcript, dict):
        segments = len(transcript.get("segments") or [])
        text = transcript.get("text", "")
        return f"{segments} segment(s): {text[:70]!r}"
    return str(transcript)[:80]


class QuotaPeaks:
    """The highest tokens and requests each pool+deployment held in its window, and its limits."""

    def __init__(self) -> None:
        self.peaks: dict[str, tuple[int, int, QuotaStatus]] = {}

    def observe(self, statuses: Iterable[QuotaStatus]) -> None:
        for status in statuses:
            name = f"{status.pool}/{status.deployment}"
            tokens, requests, _ = self.peaks.get(name, (0, 0, status))
            self.peaks[name] = (
                max(tokens, status.used_tokens + status.locked_tokens),
                max(requests, status.used_requests + status.locked_requests),
                status,
            )

    def lines(self) -> list[str]:
        lines = []
        for name, (tokens, requests, status) in sorted(self.peaks.items()):
            spent = f"{tokens:,} of {status.tpm:,} tokens, " if status.tpm else ""
            lines.append(f"    {name:<34} {spent}{requests:,} of {status.rpm:,} requests")
        return lines
