"""Reading results off the output queues for `make run`: taking them, or only looking.

By default `make run` takes (receives and completes) every result on its output queues, its own
and anyone else's, and prints each one, so nothing is lost from sight. With ``--no-consume`` it
browses instead: each result is printed once (by sequence number) and stays on the queue for
``python -m bridge peek`` or the producer's own consumer. Results already on a queue when
browsing starts are not printed again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from bridge.bus import Bus, Receiver

RECEIVE_WAIT_SECS = 0.5
# Browsing re-reads a queue from its oldest message each round: enough for any sample run and a
# person's own messages; a queue holding more than this is drained by its own consumer.
BROWSE_MAX = 1000


@dataclass(frozen=True)
class Result:
    queue: str
    body: dict[str, Any]


def parse(queue: str, text: str) -> Result:
    """A result body as JSON; one that is not a JSON object is shown as it came."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"id": None, "error": {"type": "NotAJsonObject", "detail": text[:200]}}
    return Result(queue, body)


class ResultReader:
    """``read()`` returns the results that arrived since the last call, from every queue."""

    def __init__(self, bus: Bus, queues: list[str], *, consume: bool) -> None:
        self.bus, self.queues, self.consume = bus, queues, consume
        self._receivers: dict[str, Receiver] = {}
        self._seen: dict[str, set[int]] = {}
        if consume:
            self._receivers = {queue: bus.receiver(queue) for queue in queues}
        else:
            self._seen = {
                queue: {m.sequence_number for m in bus.peek(queue, BROWSE_MAX)} for queue in queues
            }

    def read(self) -> list[Result]:
        return self._take() if self.consume else self._browse()

    def _take(self) -> list[Result]:
        results = []
        for queue, receiver in self._receivers.items():
            batch = receiver.receive(max_count=32, max_wait_s=RECEIVE_WAIT_SECS)
            results += [parse(queue, message.body) for message in batch]
            receiver.complete(batch)
        return results

    def _browse(self) -> list[Result]:
        results = []
        for queue in self.queues:
            for message in self.bus.peek(queue, BROWSE_MAX):
                if message.sequence_number not in self._seen[queue]:
                    self._seen[queue].add(message.sequence_number)
                    results.append(parse(queue, message.body))
        if not results:
            time.sleep(RECEIVE_WAIT_SECS)  # peek does not wait for messages as receive does
        return results

    def close(self) -> None:
        for receiver in self._receivers.values():
            receiver.close()
