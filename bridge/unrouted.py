"""Queues that hold messages no route reads: reported, instead of left to sit silently.

A message sent to a queue the bridge has no route for (a typo in the sender's queue name, a
route removed from ``CONDUIT_ROUTES``) waits there for ever, and nothing showed it. The bridge
asks the bus for the queues holding messages every ``CHECK_SECS``, logs the queues that are
neither a route's input nor its output (output queues hold results for their readers), and
writes them for the dashboard, which reads them with the other bridge stats
(``read_bridge_stats``):

    conduit:bridge:unrouted   string  {"checked_at": unix s, "queues": {queue: messages}}

The report expires after a few checks, so a stopped bridge's last one is not shown as current.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

import redis

from bridge.bus_api import Bus
from settings import Route, get_logger

log = get_logger(__name__)

UNROUTED_KEY = "conduit:bridge:unrouted"
# Listing a namespace's queues is a management call (or a SCAN of the local bus's keys): a few
# times a minute finds a stray message soon enough, and costs nothing next to the message path.
CHECK_SECS = 30.0
REPORT_TTL_SECS = int(4 * CHECK_SECS)


def unrouted_queues(counts: Mapping[str, int], routes: Sequence[Route]) -> dict[str, int]:
    """The queues of ``counts`` holding messages that no route reads or writes (no I/O)."""
    routed = {route.in_queue for route in routes} | {route.out_queue for route in routes}
    return {queue: n for queue, n in sorted(counts.items()) if n > 0 and queue not in routed}


class UnroutedReporter:
    """Checks the bus for unrouted queues every ``check_every_s``; call :meth:`tick` often."""

    def __init__(
        self,
        bus: Bus,
        client: redis.Redis,
        routes: Sequence[Route],
        check_every_s: float = CHECK_SECS,
    ) -> None:
        self.bus, self.client, self.routes, self.check_every_s = bus, client, routes, check_every_s
        self.next_check = 0.0
        self.reported: dict[str, int] = {}

    def tick(self) -> None:
        if time.monotonic() >= self.next_check:
            self.next_check = time.monotonic() + self.check_every_s
            self.check()

    def check(self) -> dict[str, int] | None:
        """The unrouted queues now, also logged and written for the dashboard; None when the
        bus cannot list its queues."""
        counts = self.bus.active_message_counts()
        if counts is None:
            return None
        found = unrouted_queues(counts, self.routes)
        self.client.set(
            UNROUTED_KEY,
            json.dumps({"checked_at": time.time(), "queues": found}),
            ex=REPORT_TTL_SECS,
        )
        new = sorted(set(found) - set(self.reported))
        if new:
            log.warning(
                "messages wait in queue(s) no route reads: %s; add a route to CONDUIT_ROUTES "
                "or fix the sender's queue name",
                ", ".join(f"{queue} ({found[queue]})" for queue in new),
            )
        for queue in sorted(set(self.reported) - set(found)):
            log.info("queue %s no longer holds unrouted messages", queue)
        self.reported = found
        return found


def read_unrouted(client: redis.Redis) -> dict[str, Any]:
    """The last report: ``{"checked_at": unix s or None, "queues": [{"queue", "messages"}]}``."""
    stored = cast(str | bytes | None, client.get(UNROUTED_KEY))
    report = json.loads(stored) if stored else {"checked_at": None, "queues": {}}
    return {
        "checked_at": report["checked_at"],
        "queues": [{"queue": q, "messages": n} for q, n in report["queues"].items()],
    }
