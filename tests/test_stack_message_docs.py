"""docs/messages.md is what the processors' models say today, and every shipped sample is a
message the bridge accepts as it is."""

from __future__ import annotations

import json

import pytest

from bridge.bus import ReceivedMessage
from bridge.routing import TaskRequest, route_message
from settings import Route, load_settings
from stack.message_docs import DOC_PATH, SAMPLES, main, render
from tasks.processors import PROCESSORS


def test_the_committed_page_is_what_the_code_generates() -> None:
    assert DOC_PATH.read_text(encoding="utf-8") == render(), (
        "docs/messages.md is out of date: run python -m stack.message_docs"
    )
    assert main(["--check"]) == 0


def test_check_fails_on_a_stale_page(monkeypatch, tmp_path, capsys) -> None:
    stale = tmp_path / "messages.md"
    stale.write_text(render().replace("| `language` | string | yes |", "| `language` | x |"))
    monkeypatch.setattr("stack.message_docs.DOC_PATH", stale)
    monkeypatch.setattr("stack.message_docs.REPO_ROOT", tmp_path)
    assert main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().err


def test_every_input_field_is_documented() -> None:
    page = render()
    for processor in PROCESSORS.values():
        assert f"## `{processor.name}`" in page
        for field in processor.input_model.model_fields:
            assert f"| `{field}` |" in page, (processor.name, field)


SAMPLE_FILES = sorted(SAMPLES.glob("*.jsonl"))


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=[path.name for path in SAMPLE_FILES])
def test_each_sample_line_is_accepted_by_the_bridge_as_it_is(path) -> None:
    processor = path.stem
    assert processor in PROCESSORS, f"{path.name} names no processor"
    route = Route(in_queue="in", processor=processor, out_queue="out")
    settings = load_settings()
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    ids = [json.loads(line)["id"] for line in lines]
    assert len(set(ids)) == len(ids), f"{path.name}: ids repeat"
    for number, line in enumerate(lines, start=1):
        message = ReceivedMessage(
            body=line, message_id=f"m{number}", sequence_number=number, delivery_count=1
        )
        outcome = route_message(
            route,
            message,
            max_bytes=settings.bridge_max_message_bytes,
            max_depth=settings.bridge_max_json_depth,
        )
        assert isinstance(outcome, TaskRequest), f"{path.name}:{number}: {outcome}"
