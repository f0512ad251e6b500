"""Counting as the workload runs: results (one per input, anything else called out) and the
most quota each pool held in its window at any moment, since the window forgets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from quota import QuotaStatus
from stack.results import Result
from stack.workload import SampleMessage


class ResultTally:
    """Matches results to the inputs they answer (by the body's ``id``). Results for any other
    id (a person's own messages, a late answer to an earlier run) are shown, labelled, and
    counted apart: they say nothing about this run."""

    def __init__(self, inputs: Iterable[SampleMessage]) -> None:
        self.inputs = {message.body["id"]: message for message in inputs}
        self.seen: Counter[str] = Counter()
        self.failed: set[str] = set()
        self.others = 0

    @property
    def answered(self) -> int:
        return len(self.seen)

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.seen.values())

    @property
    def complete(self) -> bool:
        return self.answered == len(self.inputs)

    def waiting(self) -> list[SampleMessage]:
        """The inputs with no result yet."""
        return [message for key, message in self.inputs.items() if key not in self.seen]

    def record(self, result: Result) -> str:
        """Count one result; the progress line to print for it."""
        body = result.body
        result_id = str(body.get("id"))
        if result_id not in self.inputs:
            self.others += 1
            return (
                f"  » not from this run, on {result.queue}: id {body.get('id')!r} {outcome(body)}"
            )
        self.seen[result_id] += 1
        label = self.inputs[result_id].label
        if self.seen[result_id] > 1:
            return f"  ! {label}: a second result (duplicate)"
        position = f"[{self.answered:>2}/{len(self.inputs)}]"
        if body.get("message") != "SUCCESS":
            self.failed.add(result_id)
        return f"{position} {label}: {outcome(body)}"


def outcome(body: dict[str, Any]) -> str:
    """A result in a few words: what it found, or why it failed."""
    if body.get("message") != "SUCCESS":
        error = body.get("error") or {}
        if not isinstance(error, dict):
            error = {"detail": error}
        return f"FAILED {error.get('type')}: {error.get('detail') or body.get('message')}"
    return describe(body)


def describe(result: dict[str, Any]) -> str:
    if "sentiment" in result:
        return f"{result['sentiment']:<8} {', '.join(result.get('categories', []))[:60]}"
    transcript = result.get("transcript")
    if transcript is None:
        return ", ".join(f"{key}={value!r}" for key, value in result.items() if key != "id")[:80]
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
