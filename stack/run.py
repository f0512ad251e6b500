"""``make run`` (``python -m stack``): the whole stack, a sample workload, then Ctrl-C to stop.

1. Redis: the embedded ``redis-server`` (settings.redis_server), or none when REDIS_URL is set.
2. The Procfile's web, worker, bridge and Flower (and the emulators when no Azure OpenAI endpoint
   is configured) under honcho, with dev defaults (AUTH_DISABLED, console logs) unless the
   environment says otherwise. Their output goes to ``.data/stack.log``.
3. Waits until ``/ready`` (Redis, broker, a bridge heartbeat, a worker) answers 200.
4. Sends the sample workload (stack/workload.py) to the input queues, prints each result as it
   arrives on the output queues, then a summary: processed, failed, quota used, URLs.
5. Leaves everything running until Ctrl-C (or SIGTERM), then stops every process it started.

``--exit-after-workload`` stops after the summary (CI's smoke test), exiting non-zero unless every
input got exactly one successful result.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

from bridge.bus import Bus, connect_bus
from quota import QuotaLimiter
from settings import Settings, get_settings
from settings.redis_server import RedisServerError, ensure_redis, port_in_use
from settings.tiktoken_offline import seed_tiktoken_cache
from stack.call_demo import place_demo_call
from stack.tally import QuotaPeaks, ResultTally
from stack.workload import SampleMessage, sample_workload, send_workload

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / ".data"
# A cold start (celery, librosa, the emulator's recogniser) on a busy 2-core machine.
READY_TIMEOUT_SECS = 240.0
# The whisper pool's 15 RPM spaces the clips' chunks; feedback forms take seconds each.
WORKLOAD_TIMEOUT_SECS = 600.0
# honcho gives its processes 5 s after SIGTERM before it kills them.
STOP_TIMEOUT_SECS = 30.0
RECEIVE_WAIT_SECS = 0.5
# Development defaults; anything already in the environment wins.
DEV_DEFAULTS = {
    "AUTH_DISABLED": "true",
    "LOG_FORMAT": "console",
    "PYTHONUNBUFFERED": "1",
    # Short enough that the long sample clip is split into chunks and transcribed in parallel.
    "APP_WHISPER_CHUNK_MAX_SECONDS": "15",
    # The sample clips are written here and sent as audio_path messages.
    "AUDIO_LOCAL_ROOT": str(DATA_DIR / "samples"),
    # The voice agent hears the demo phrases (python -m voice.simulate) exactly; see voice/README.
    "LOCAL_STT_PHRASES_FILE": str(
        Path(__file__).resolve().parents[1] / "emulators" / "phrases.txt"
    ),
}


# How to reach a worker from another terminal while the stack runs.
PING_COMMAND = (
    """.venv/bin/python -c "from worker import app; """
    """print(app.send_task('worker.ping').get(timeout=10))\""""
)


class StackError(RuntimeError):
    """The stack could not start or do its work; the message says what to look at."""


def say(line: str = "") -> None:
    print(line, flush=True)


def process_names(settings: Settings) -> list[str]:
    names = ["web", "worker", "bridge", "flower"]
    if settings.embedded_openai:
        names.append("emulators")
    if settings.embedded_acs:
        names.append("acs")
    return names


def check_ports(settings: Settings) -> None:
    ports = {"WEB_PORT": settings.web_port, "FLOWER_PORT": settings.flower_port}
    if settings.embedded_openai:
        ports["EMULATOR_PORT"] = settings.emulator_port
    if settings.embedded_acs:
        ports["ACS_EMULATOR_PORT"] = settings.acs_emulator_port
    for variable, port in ports.items():
        if port_in_use(port):
            raise StackError(
                f"Port {port} ({variable}) is in use: stop what runs there, or set "
                f"{variable} to a free port."
            )


def stack_environment(settings: Settings, redis_url: str) -> dict[str, str]:
    env = {**DEV_DEFAULTS, **os.environ}
    # Procfile commands (celery, gunicorn) are found in this interpreter's virtualenv.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TIKTOKEN_CACHE_DIR"] = str(seed_tiktoken_cache())
    env.update(
        REDIS_URL=redis_url,
        WEB_PORT=str(settings.web_port),
        FLOWER_PORT=str(settings.flower_port),
        EMULATOR_PORT=str(settings.emulator_port),
    )
    return env


def start_processes(names: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "honcho", "start", "-f", "Procfile", *names],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_until_ready(base_url: str, honcho: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECS
    failing = "no answer yet"
    while time.monotonic() < deadline:
        if honcho.poll() is not None:
            raise StackError(f"A process exited during start-up; see {log_path}.")
        try:
            answer = httpx.get(f"{base_url}/ready", timeout=5)
            if answer.status_code == 200:
                return
            checks = answer.json()["checks"]
            failing = "; ".join(
                f"{name}: {check['detail']}" for name, check in checks.items() if not check["ok"]
            )
        except httpx.HTTPError as error:
            failing = f"web: {error}"
        time.sleep(1)
    raise StackError(f"Not ready after {READY_TIMEOUT_SECS:g} s ({failing}); see {log_path}.")


def collect_results(
    bus: Bus,
    out_queues: list[str],
    tally: ResultTally,
    deadline: float,
    honcho: subprocess.Popen,
    *,
    stop_when_complete: bool = True,
    each_round: Callable[[], None] = lambda: None,
) -> None:
    """Print each result as it arrives until every input is answered (or the deadline)."""
    receivers = [bus.receiver(queue) for queue in out_queues]
    try:
        while time.monotonic() < deadline and honcho.poll() is None:
            if stop_when_complete and tally.complete:
                return
            each_round()
            for receiver in receivers:
                batch = receiver.receive(max_count=32, max_wait_s=RECEIVE_WAIT_SECS)
                for message in batch:
                    say(tally.record(json.loads(message.body)))
                receiver.complete(batch)
    finally:
        for receiver in receivers:
            receiver.close()


def summary(
    settings: Settings,
    tally: ResultTally,
    *,
    peaks: QuotaPeaks,
    window_s: float,
    seconds: float,
    log_path: Path,
) -> None:
    web = f"http://127.0.0.1:{settings.web_port}"
    say()
    say("Summary")
    say(f"  processed   {tally.answered} of {len(tally.inputs)} inputs in {seconds:.0f} s")
    say(f"  failed      {len(tally.failed)}")
    say(f"  duplicates  {tally.duplicates}")
    say(f"  quota: the most held in any {window_s:g} s window during the run, of the limit")
    for line in peaks.lines():
        say(line)
    say(f"  dashboard   {web}/dashboard")
    say(f"  flower      http://127.0.0.1:{settings.flower_port}")
    say(f"  quota API   {web}/api/v1/quota")
    say(f"  logs        {log_path}")
    say(f"  try         {PING_COMMAND}")


def run_workload(
    settings: Settings, redis_url: str, honcho: subprocess.Popen, log_path: Path
) -> ResultTally:
    messages: list[SampleMessage] = sample_workload(settings, DATA_DIR / "samples")
    tally = ResultTally(messages)
    out_queues = sorted({message.route.out_queue for message in messages})
    bus = connect_bus(settings)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    limiter, peaks = QuotaLimiter(client, settings), QuotaPeaks()
    try:
        started = time.monotonic()
        send_workload(bus, messages)
        in_queues = ", ".join(sorted({message.route.in_queue for message in messages}))
        say(f"Sent {len(messages)} sample messages to {in_queues}; results as they arrive:")
        collect_results(
            bus,
            out_queues,
            tally,
            started + WORKLOAD_TIMEOUT_SECS,
            honcho,
            each_round=lambda: peaks.observe(limiter.all_status()),
        )
        peaks.observe(limiter.all_status())
        summary(
            settings,
            tally,
            peaks=peaks,
            window_s=limiter.window_s,
            seconds=time.monotonic() - started,
            log_path=log_path,
        )
    finally:
        bus.close()
        client.close()
    return tally


def keep_running(settings: Settings, honcho: subprocess.Popen, tally: ResultTally) -> None:
    """Until Ctrl-C: keep an eye on the output queues, so a late duplicate would still show."""
    say("\nThe stack keeps running; press Ctrl-C to stop it.")
    bus = connect_bus(settings)
    out_queues = sorted({message.route.out_queue for message in tally.inputs.values()})
    try:
        collect_results(bus, out_queues, tally, float("inf"), honcho, stop_when_complete=False)
    finally:
        bus.close()
    if honcho.poll() is not None:
        raise StackError("A process of the stack exited; see the log.")


def stop_processes(honcho: subprocess.Popen) -> None:
    if honcho.poll() is None:
        honcho.send_signal(signal.SIGTERM)  # honcho stops every process it started
    try:
        honcho.wait(STOP_TIMEOUT_SECS)
    except subprocess.TimeoutExpired:
        honcho.kill()
        honcho.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--exit-after-workload",
        action="store_true",
        help="stop after the summary (CI); exit 1 unless every input got "
        "exactly one successful result",
    )
    args = parser.parse_args(argv)
    # Both explicitly: a shell starts background jobs with SIGINT ignored, and Python then
    # keeps it ignored, so Ctrl-C (or a test's SIGINT) would stop honcho but not this process.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)

    settings = get_settings()
    log_path = DATA_DIR / "stack.log"
    honcho = redis_server = None
    try:
        check_ports(settings)
        redis_url, redis_server = ensure_redis(settings)
        names = process_names(settings)
        say(
            f"Redis at {redis_url} ({'embedded' if redis_server else 'REDIS_URL'}); starting "
            f"{', '.join(names)}; logs in {log_path}"
        )
        started = time.monotonic()
        honcho = start_processes(names, stack_environment(settings, redis_url), log_path)
        wait_until_ready(f"http://127.0.0.1:{settings.web_port}", honcho, log_path)
        say(f"Ready in {time.monotonic() - started:.0f} s.")
        tally = run_workload(settings, redis_url, honcho, log_path)
        place_demo_call(settings, say)  # stack/call_demo.py: one emulated phone call
        if args.exit_after_workload:
            clean = tally.complete and not (tally.failed or tally.duplicates or tally.unexpected)
            return 0 if clean else 1
        keep_running(settings, honcho, tally)
        return 1
    except KeyboardInterrupt:
        say("\nStopping…")
        return 0
    except (StackError, RedisServerError) as error:
        say(f"make run: {error}")
        return 1
    finally:
        if honcho is not None:
            stop_processes(honcho)
        if redis_server is not None:
            redis_server.stop()
        if honcho is not None:
            say("Stopped.")
