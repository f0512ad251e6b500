"""The sample workload: each `make run` sends new messages, so a second run is answered too."""

from __future__ import annotations

from settings import load_settings
from stack.workload import sample_workload


def test_each_run_sends_new_message_and_body_ids(tmp_path):
    first, second = (sample_workload(load_settings(), tmp_path) for _ in range(2))
    assert len(first) == len(second) == len({m.message_id for m in first})
    assert not {m.message_id for m in first} & {m.message_id for m in second}
    assert not {m.body["id"] for m in first} & {m.body["id"] for m in second}
