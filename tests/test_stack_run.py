"""`make run`'s smoke test: the whole stack on free ports, the sample workload through the bus,
exactly one result per input, and Ctrl-C stopping every process."""

from __future__ import annotations

import re
import signal

import pytest
import redis

from bridge.local_bus import LocalBus
from settings import load_settings
from settings.redis_server import free_port
from stack.workload import feedback_messages, route_for
from tests.support.processes import ManagedProcess, python_args

# The whisper pool's 15 RPM paces the long clip's chunks: about two minutes on a quiet machine.
WORKLOAD_TIMEOUT_SECS = 540.0


@pytest.mark.slow
@pytest.mark.timeout(720)
def test_make_run_answers_every_sample_once_and_stops_on_ctrl_c(
    conduit_env, redis_url, tmp_path
) -> None:
    ports = {
        "WEB_PORT": free_port(),
        "FLOWER_PORT": free_port(),
        "EMULATOR_PORT": free_port(),
        "ACS_EMULATOR_PORT": free_port(),
    }
    env = {**conduit_env, **{name: str(port) for name, port in ports.items()}}
    env["ACS_EMULATOR_DIR"] = str(tmp_path / "acs-emulator")
    stack = ManagedProcess(python_args("-m", "stack"), env, tmp_path / "stack.out", name="make run")
    stack.start()
    try:
        stack.wait_until(
            lambda: "press Ctrl-C" in stack.output(),
            WORKLOAD_TIMEOUT_SECS,
            "the sample workload to finish",
        )
        output = stack.output()
        expected = len(feedback_messages(route_for(load_settings(), "feedback"))) + 2
        assert f"processed   {expected} of {expected} inputs" in output, output
        assert "failed      0" in output
        assert "duplicates  0" in output
        assert re.search(r"completion/gpt-4o\s+[1-9][\d,]* of 128,000 tokens", output), output
        assert f"http://127.0.0.1:{ports['WEB_PORT']}/dashboard" in output
        # The phone call after the workload: answered, the question heard, an answer spoken.
        assert "caller: 'what is the weather today'" in output, output
        assert re.search(r"agent: .*\([\d.]+ s of audio, first after [\d.]+ ms\)", output), output

        stack.signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
        assert stack.process.wait(60) == 0
        assert "Stopped." in stack.output()
        assert "(duplicate)" not in stack.output()
    finally:
        stack.stop()

    # Nothing more arrived after the summary: no result was sent twice.
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    bus = LocalBus(client)
    try:
        for queue in ("form_oq", "whisper_oq"):
            assert bus.peek(queue, 10) == []
    finally:
        client.close()
