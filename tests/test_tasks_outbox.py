"""The outbox on a real Redis: whatever JSON value a task returns can be written, once."""

from __future__ import annotations

import json

import pytest

from tasks.outbox import stream_key, write_result, written_result
from tests.support.cluster import on_plain_and_cluster


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    on_plain_and_cluster(metafunc)  # each test on a plain Redis and on a Redis Cluster


def test_a_result_with_a_lone_surrogate_is_written_as_escaped_json(state_client):
    # A body parsed from '{"text": "\ud800"}' holds a str that no UTF-8 can carry.
    body = {"id": "1", "text": "a\ud800b", "name": "Zoë"}

    assert write_result(state_client, "out", "task-1", "m-1", body) is not None

    [(_, fields)] = state_client.xrange(stream_key("out"))
    assert fields["body"].isascii()  # escaped, so every character survives, Zoë's too
    assert json.loads(fields["body"]) == body
    assert written_result(state_client, "out", "task-1") == body


def test_a_plain_result_keeps_its_characters_unescaped(state_client):
    body = {"id": "2", "name": "Zoë"}
    write_result(state_client, "out", "task-2", "m-2", body)
    [(_, fields)] = state_client.xrange(stream_key("out"))
    assert fields["body"] == '{"id": "2", "name": "Zoë"}'
