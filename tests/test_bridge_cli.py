"""`python -m bridge send | peek | dlq`, here against the local bus (Service Bus alike), on the
broker's Redis and with STATE_REDIS_URL on a Redis Cluster."""

from __future__ import annotations

import io
import json

import pytest

from bridge.cli import main
from bridge.local_bus import LocalBus
from tests.support.cluster import on_plain_and_cluster


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    on_plain_and_cluster(metafunc)  # each test on a plain Redis and on a Redis Cluster


@pytest.fixture
def bus(state_client) -> LocalBus:
    return LocalBus(state_client)


def shown(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_send_then_peek(tmp_path, capsys, bus, redis_url):
    message = tmp_path / "message.json"
    message.write_text('{"id": "7"}')
    assert (
        main(["send", "form_iq", str(message), "--message-id", "m-7", "--property", "app=forms"])
        == 0
    )
    assert capsys.readouterr().out.strip() == "m-7"
    assert main(["peek", "form_iq"]) == 0
    [peeked] = shown(capsys)
    assert (peeked["message_id"], peeked["body"]) == ("m-7", '{"id": "7"}')
    assert peeked["application_properties"] == {"app": "forms"}


def test_send_lines_from_stdin(monkeypatch, capsys, bus, redis_url):
    monkeypatch.setattr("sys.stdin", io.StringIO('{"id": 1}\n\n{"id": 2}\n'))
    assert main(["send", "form_iq", "-", "--lines"]) == 0
    assert len(capsys.readouterr().out.split()) == 2
    assert [m.body for m in bus.peek("form_iq", 10)] == ['{"id": 1}', '{"id": 2}']


def test_dlq_lists_reasons_and_resubmits(tmp_path, capsys, bus, redis_url):
    message = tmp_path / "bad.json"
    message.write_text("not json")
    main(["send", "form_iq", str(message), "--message-id", "bad"])
    [received] = bus.receiver("form_iq").receive(1, 0)
    bus.receiver("form_iq").dead_letter(received, "MalformedJson", "body is not valid JSON")
    capsys.readouterr()
    assert main(["dlq", "form_iq"]) == 0
    [dead] = shown(capsys)
    assert (dead["message_id"], dead["dead_letter_reason"]) == ("bad", "MalformedJson")
    assert main(["dlq", "form_iq", "--resubmit"]) == 0
    assert [m.message_id for m in bus.peek("form_iq", 10)] == ["bad"]
