"""The dashboard chart's history, kept in Redis, so a page opened after a run still shows it.

One point per second (what each pool's window held), the last ``HISTORY_SECS``, in a sorted set
scored by the point's Redis server time. Every gunicorn worker ticks (web/broadcaster.py), whether
or not anyone watches; the record script keeps the first point of each second and drops the rest,
so N web processes write one history and every one of them serves the same.

    history = ChartHistory(client)
    history.record({"t": 1732838400.25, "series": {...}})   # True: stored; False: second taken
    history.recent()                                          # oldest first, the last 5 minutes
"""

from __future__ import annotations

import json
from typing import Any

import redis

HISTORY_KEY = "conduit:dashboard:history"
# The chart's width: five minutes at one point per second.
HISTORY_SECS = 300.0

# KEYS[1] the history; ARGV: the point's time, the point (JSON), how long to keep points.
# ZCOUNT over [second, second + 1) is the "this second is taken" check, atomic with the ZADD.
RECORD_SCRIPT = """
local t = tonumber(ARGV[1])
local second = math.floor(t)
if redis.call('ZCOUNT', KEYS[1], second, '(' .. (second + 1)) > 0 then
  return 0
end
redis.call('ZADD', KEYS[1], t, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (t - tonumber(ARGV[3])))
redis.call('EXPIRE', KEYS[1], math.ceil(2 * tonumber(ARGV[3])))
return 1
"""


class ChartHistory:
    """The chart's recent points in Redis, shared by every web process."""

    def __init__(
        self, client: redis.Redis, keep_s: float = HISTORY_SECS, key: str = HISTORY_KEY
    ) -> None:
        self._client, self.keep_s, self.key = client, keep_s, key
        # redis-py's Script loads it again by itself if Redis lost it (a restart).
        self._record = client.register_script(RECORD_SCRIPT)

    def record(self, point: dict[str, Any]) -> bool:
        """Store ``point`` unless a point for its second is already there."""
        stored = self._record(keys=[self.key], args=[point["t"], json.dumps(point), self.keep_s])
        return bool(stored)

    def recent(self) -> list[dict[str, Any]]:
        """The points of the last ``keep_s`` seconds by Redis's clock, oldest first."""
        pipe = self._client.pipeline(transaction=False)
        pipe.time()
        pipe.zrange(self.key, 0, -1, withscores=True)
        (seconds, micros), members = pipe.execute()
        oldest = int(seconds) + int(micros) / 1e6 - self.keep_s
        return [json.loads(member) for member, score in members if score >= oldest]
