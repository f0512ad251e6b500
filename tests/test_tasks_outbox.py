"""The outbox on a real Redis: whatever JSON value a task returns can be written, once."""

from __future__ import annotations

import json

from tasks.outbox import stream_key, write_result, written_result


def test_a_result_with_a_lone_surrogate_is_written_as_escaped_json(redis_client):
    # A body parsed from '{"text": "\ud800"}' holds a str that no UTF-8 can carry.
    body = {"id": "1", "text": "a\ud800b", "name": "Zoë"}

    assert write_result(redis_client, "out", "task-1", "m-1", body) is not None

    [(_, fields)] = redis_client.xrange(stream_key("out"))
    assert fields["body"].isascii()  # escaped, so every character survives, Zoë's too
    assert json.loads(fields["body"]) == body
    assert written_result(redis_client, "out", "task-1") == body


def test_a_plain_result_keeps_its_characters_unescaped(redis_client):
    body = {"id": "2", "name": "Zoë"}
    write_result(redis_client, "out", "task-2", "m-2", body)
    [(_, fields)] = redis_client.xrange(stream_key("out"))
    assert fields["body"] == '{"id": "2", "name": "Zoë"}'
