"""`make run`'s smoke test: the whole stack on free ports, the sample workload through the bus,
exactly one result per input, and Ctrl-C stopping every process; and a person's own message
shown and kept while `make run --no-consume` is up, then Ctrl-C stopping Redis last."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading

import pytest
import redis
from werkzeug.serving import make_server

from bridge.local_bus import LocalBus
from settings import load_settings
from settings.redis_server import free_port, port_in_use
from stack.run import DATA_DIR, StackError, wait_until_ready
from stack.workload import SAMPLES, feedback_messages, route_for
from tests.support.processes import ManagedProcess, python_args
from web.app import create_app

# The whisper pool's 15 RPM paces the long clip's chunks: about two minutes on a quiet machine.
WORKLOAD_TIMEOUT_SECS = 540.0


@pytest.mark.slow
@pytest.mark.timeout(720)
def test_make_run_answers_every_sample_once_and_stops_on_ctrl_c(
    conduit_env, redis_url, tmp_path
) -> None:
    ports = {"WEB_PORT": free_port(), "FLOWER_PORT": free_port(), "EMULATOR_PORT": free_port()}
    env = {**conduit_env, **{name: str(port) for name, port in ports.items()}}
    env["EMULATOR_SEARCH_DATA_DIR"] = str(tmp_path / "search")
    stack = ManagedProcess(python_args("-m", "stack"), env, tmp_path / "stack.out", name="make run")
    stack.start()
    try:
        stack.wait_until(
            lambda: "Ctrl-C stops it" in stack.output(),
            WORKLOAD_TIMEOUT_SECS,
            "the sample workload to finish",
        )
        output = stack.output()
        expected = len(feedback_messages(route_for(load_settings(), "feedback"))) + 2
        assert f"processed   {expected} of {expected} inputs" in output, output
        assert "not ours" not in output
        assert "failed      0" in output
        assert "duplicates  0" in output
        assert re.search(r"completion/gpt-4o\s+[1-9][\d,]* of 128,000 tokens", output), output
        assert f"http://127.0.0.1:{ports['WEB_PORT']}/dashboard" in output
        # The search step: the READMEs indexed, two reasoner answers with their citations.
        assert re.search(r"Indexed [1-9]\d* chunks of [1-9]\d* READMEs", output), output
        assert output.count("     citations ") == 2, output

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
        for queue in ("form_oq", "whisper_oq", "reasoner_oq"):
            assert bus.peek(queue, 10) == []
    finally:
        client.close()


# Start-up of every process on a loaded 2-core machine, then one feedback form.
OWN_MESSAGE_TIMEOUT_SECS = 240.0
# What the worker (kombu, redis-py) logs when Redis vanishes under it.
LOST_REDIS = re.compile(r"Connection refused|Error 111|ConnectionError|Cannot connect to redis")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_own_message_is_shown_and_kept_then_ctrl_c_stops_redis_last(conduit_env, tmp_path) -> None:
    ports = {
        "WEB_PORT": free_port(),
        "FLOWER_PORT": free_port(),
        "EMULATOR_PORT": free_port(),
        "REDIS_PORT": free_port(),
    }
    env = {**conduit_env, **{name: str(port) for name, port in ports.items()}}
    del env["REDIS_URL"]  # the embedded Redis, as a first `make run` has
    env["REDIS_DATA_DIR"] = str(tmp_path / "redis")
    redis_url = f"redis://127.0.0.1:{ports['REDIS_PORT']}/0"
    stack_log = DATA_DIR / "stack.log"
    log_start = stack_log.stat().st_size if stack_log.exists() else 0
    stack = ManagedProcess(
        python_args("-m", "stack", "--no-workload", "--no-consume"),
        env,
        tmp_path / "stack.out",
        name="make run",
    )
    stack.start()
    try:
        stack.wait_until(
            lambda: "Ctrl-C stops it" in stack.output(), OWN_MESSAGE_TIMEOUT_SECS, "ready"
        )
        line = (SAMPLES / "feedback.jsonl").read_text(encoding="utf-8").splitlines()[0]
        (tmp_path / "mine.json").write_text(line, encoding="utf-8")
        cli_env = {**env, "REDIS_URL": redis_url}
        sent = subprocess.run(
            python_args("-m", "bridge", "send", "form_iq", str(tmp_path / "mine.json")),
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "sent 1 message(s) to form_iq" in sent.stderr
        stack.wait_until(
            lambda: "not from this run, on form_oq: id 'sample-feedback-01'" in stack.output(),
            OWN_MESSAGE_TIMEOUT_SECS,
            "make run to print the result of our own message",
        )
        peeked = subprocess.run(
            python_args("-m", "bridge", "peek", "form_oq"),
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        bodies = [json.loads(json.loads(row)["body"]) for row in peeked.stdout.splitlines()]
        assert [body["id"] for body in bodies] == ["sample-feedback-01"]
        assert bodies[0]["message"] == "SUCCESS"

        stack.signal(signal.SIGINT)  # Ctrl-C: the terminal signals the whole process group
        assert stack.process.wait(90) == 0
    finally:
        stack.stop()

    output = stack.output()
    stopping = output.index("Stopping web, worker, bridge")
    assert stopping < output.index("Stopping the embedded Redis") < output.index("Stopped.")
    assert not port_in_use(ports["REDIS_PORT"]), "the embedded Redis is still running"
    with stack_log.open("rb") as log:
        log.seek(log_start)
        processes_log = log.read().decode(errors="replace")
    # honcho's own lines: "system | worker.1 stopped (rc=-15)"; -9 would mean it was killed.
    stops = re.findall(r"\| (\w+)\.\d+ stopped \(rc=(-?\d+)\)", processes_log)
    assert {name for name, _ in stops} >= {"web", "worker", "bridge"}, processes_log[-3000:]
    assert all(rc != "-9" for _, rc in stops), f"killed, not stopped: {stops}"
    assert not LOST_REDIS.search(processes_log), LOST_REDIS.search(processes_log)


def test_waiting_for_ready_says_what_fails_and_names_a_wrong_endpoint(
    redis_url, tmp_path, capsys
) -> None:
    """A wrong APP_OPENAI_API_BASE shows within seconds of start-up, with its URL, instead of
    a silent wait that ends in a timeout."""
    wrong = f"http://127.0.0.1:{free_port()}"
    app = create_app(load_settings(auth_disabled=True, redis_url=redis_url, openai_api_base=wrong))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    honcho = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        with pytest.raises(StackError) as raised:
            wait_until_ready(
                f"http://127.0.0.1:{server.server_port}",
                honcho,
                tmp_path / "stack.log",
                timeout_s=6,
                every_s=1,
            )
    finally:
        honcho.kill()
        honcho.wait()
        server.shutdown()
        serving.join()
        server.server_close()
    progress = capsys.readouterr().out
    assert "… not ready after" in progress
    assert f"upstream: RuntimeError: {wrong} (APP_OPENAI_API_BASE) unreachable" in progress
    assert "workers:" in progress and "bridge:" in progress
    assert f"{wrong} (APP_OPENAI_API_BASE) unreachable" in str(raised.value)
