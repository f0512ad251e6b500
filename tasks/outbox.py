"""The outbox: results waiting for the bridge to send them to their output queue.

A task appends its result to a Redis Stream, one per output queue; the bridge reads the stream
with a consumer group, sends each entry, and acknowledges it only after the send succeeded (see
bridge/). A task that runs twice (redelivered after a crash) must not produce a second result,
so the write is once per task id: a marker key and the stream entry are written in one atomic
script, and the marker keeps the result so a re-run can return it without calling Azure again.

Keys share the hash tag ``{<out_queue>}``, so the script stays valid on Redis Cluster.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, cast

import redis
from redis.commands.core import Script

from telemetry import TRACEPARENT, current_carrier, tracer

KEY_PREFIX = "conduit:outbox"
# How long a task id is remembered as written: far longer than any redelivery can take.
WRITTEN_MARKER_TTL_SECS = 7 * 24 * 3600
# Entries the bridge has sent are trimmed; keep at most this many in each stream.
STREAM_MAX_LENGTH = 100_000

_WRITE_ONCE = """
-- KEYS[1] stream, KEYS[2] written marker
-- ARGV: task_id, message_id, body, marker ttl, maxlen, traceparent ('' when not traced)
-- Returns the new entry id, or false when this task id was written before.
local task_id, message_id, body = ARGV[1], ARGV[2], ARGV[3]
local marker_ttl, max_length, traceparent = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
if not redis.call('SET', KEYS[2], body, 'NX', 'EX', marker_ttl) then
  return false
end
if traceparent ~= '' then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', max_length, '*', 'task_id', task_id,
                    'message_id', message_id, 'body', body, 'traceparent', traceparent)
end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', max_length, '*',
                  'task_id', task_id, 'message_id', message_id, 'body', body)
"""


@lru_cache(maxsize=8)
def _write_once_script(client: redis.Redis) -> Script:
    """The script bound to ``client``, made once: every result written goes through it."""
    return client.register_script(_WRITE_ONCE)


def stream_key(out_queue: str) -> str:
    return f"{KEY_PREFIX}:{{{out_queue}}}"


def written_key(out_queue: str, task_id: str) -> str:
    return f"{KEY_PREFIX}:{{{out_queue}}}:written:{task_id}"


def encode_body(body: dict[str, Any]) -> str:
    """``body`` as JSON text Redis can store: characters as they are, unless a string holds
    what UTF-8 cannot carry (a lone surrogate, parsed from a message's ``"\\ud800"``), when
    the whole body is written with JSON's ``\\u`` escapes. Failing here would fail the task
    outside its processor, with no outcome written, however often it ran."""
    text = json.dumps(body, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(body)
    return text


def write_result(
    client: redis.Redis, out_queue: str, task_id: str, message_id: str, body: dict[str, Any]
) -> str | None:
    """Append ``body`` to ``out_queue``'s outbox once per task id: the new entry id, or None
    when this task id was written before. The entry carries the current trace's
    ``traceparent``, so the bridge's send continues the message's trace."""
    with tracer.start_as_current_span(
        "outbox.write", attributes={"conduit.out_queue": out_queue, "conduit.task_id": task_id}
    ):
        entry_id = _write_once_script(client)(
            keys=[stream_key(out_queue), written_key(out_queue, task_id)],
            args=[
                task_id,
                message_id,
                encode_body(body),
                WRITTEN_MARKER_TTL_SECS,
                STREAM_MAX_LENGTH,
                current_carrier().get(TRACEPARENT, ""),
            ],
        )
    return entry_id or None


def written_result(client: redis.Redis, out_queue: str, task_id: str) -> dict[str, Any] | None:
    """The result already written for this task id, if any (so a re-run need not redo the work)."""
    stored = cast(str | None, client.get(written_key(out_queue, task_id)))
    return json.loads(stored) if stored else None
