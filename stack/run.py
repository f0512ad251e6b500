"""``make run`` (``python -m stack``): the whole stack, a sample workload, then Ctrl-C to stop.

1. Redis: the embedded ``redis-server`` (settings.redis_server), or none when REDIS_URL is set.
2. The Procfile's web, counter, worker, bridge and Flower (and the emulators when no Azure
   OpenAI endpoint is configured) under honcho, with dev defaults (AUTH_DISABLED, console logs)
   unless the environment says otherwise. Their output goes to ``.data/stack.log``.
3. Waits until ``/ready`` (Redis, broker, a bridge heartbeat, a worker, the Azure OpenAI
   endpoint or emulator) answers 200, saying every few seconds which checks still fail.
4. Sends the sample workload (stack/workload.py) to the input queues, prints each result as it
   arrives on the output queues, then a summary: processed, failed, quota used, URLs. While
   results do not come, says every few seconds what waits and why (stack/progress.py).
5. Leaves everything running until Ctrl-C (or SIGTERM), printing every result that reaches an
   output queue, its own or anyone's (labelled), then stops the processes that use Redis, and
   Redis last, each within its grace period.

Results are taken off the output queues as they are printed; ``--no-consume`` only browses them,
so they stay for ``python -m bridge peek QUEUE`` (stack/results.py). ``--no-workload`` starts the
stack without sending the samples. ``--exit-after-workload`` stops after the summary (CI's smoke
test), exiting non-zero unless every input got exactly one successful result.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

from bridge.bus import connect_bus
from quota import QuotaLimiter
from settings import Settings, settings_or_exit
from settings.redis_server import RedisServer, RedisServerError, ensure_redis, port_in_use
from settings.state_redis import state_redis
from settings.tiktoken_offline import seed_tiktoken_cache
from stack.call_demo import place_demo_call
from stack.honcho_start import STOP_GRACE_SECS
from stack.progress import PROGRESS_EVERY_SECS, WaitWatcher
from stack.results import ResultReader
from stack.search_demo import run_search_demo
from stack.tally import QuotaPeaks, ResultTally
from stack.workload import SampleMessage, sample_workload, send_workload
from worker import create_celery

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / ".data"
# A cold start (celery, librosa, the emulator's recogniser) on a busy 2-core machine.
READY_TIMEOUT_SECS = 240.0
# The whisper pool's 15 RPM spaces the clips' chunks; feedback forms take seconds each.
WORKLOAD_TIMEOUT_SECS = 600.0
# honcho gives its processes STOP_GRACE_SECS after SIGTERM before it kills them; then it exits.
STOP_TIMEOUT_SECS = STOP_GRACE_SECS + 15.0
# While the stack starts, say every this often what /ready still waits for.
READY_PROGRESS_SECS = PROGRESS_EVERY_SECS
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


# How to reach a worker from another terminal while the stack runs: this venv's python by its
# absolute path, so it works from any directory (make .venv installs Conduit in that venv).
PING_COMMAND = (
    f"""{Path(sys.executable).absolute()} -c "from worker import app; """
    """print(app.send_task('worker.ping').get(timeout=10))\""""
)


class StackError(RuntimeError):
    """The stack could not start or do its work; the message says what to look at."""


def say(line: str = "") -> None:
    print(line, flush=True)


def process_names(settings: Settings) -> list[str]:
    names = ["web", "counter", "worker", "bridge", "flower"]
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
            [sys.executable, "-m", "stack.honcho_start", "start", "-f", "Procfile", *names],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: the terminal's Ctrl-C reaches only this process, which then stops
            # honcho's processes first and Redis after them (see main).
            start_new_session=True,
        )


def wait_until_ready(
    base_url: str,
    honcho: subprocess.Popen,
    log_path: Path,
    *,
    timeout_s: float = READY_TIMEOUT_SECS,
    every_s: float = READY_PROGRESS_SECS,
) -> None:
    """Until /ready answers 200; every ``every_s`` a line saying which checks still fail, so a
    wrong endpoint or a worker that cannot start shows at once, not after the timeout."""
    started = last_said = time.monotonic()
    failing = "no answer yet"
    while time.monotonic() - started < timeout_s:
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
        if time.monotonic() - last_said >= every_s:
            last_said = time.monotonic()
            say(f"  … not ready after {last_said - started:.0f} s: {failing}")
        time.sleep(min(1.0, every_s))
    raise StackError(f"Not ready after {timeout_s:g} s ({failing}); see {log_path}.")


def output_queues(settings: Settings) -> list[str]:
    """Every route's output queue: results for anyone's messages are shown, not only ours."""
    return sorted({route.out_queue for route in settings.routes})


def collect_results(
    reader: ResultReader,
    tally: ResultTally,
    deadline: float,
    honcho: subprocess.Popen,
    *,
    stop_when_complete: bool = True,
    each_round: Callable[[], None] = lambda: None,
    watcher: WaitWatcher | None = None,
) -> None:
    """Print each result as it arrives until every input is answered (or the deadline); while
    none arrive, say now and then what the inputs wait for."""
    while time.monotonic() < deadline and honcho.poll() is None:
        if stop_when_complete and tally.complete:
            return
        each_round()
        results = reader.read()
        for result in results:
            say(tally.record(result))
        if watcher is not None:
            if results:
                watcher.result_arrived()
            elif (line := watcher.line_if_quiet(tally.waiting())) is not None:
                say(line)


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
    if tally.others:
        say(f"  not ours    {tally.others} result(s) for other messages, shown above")
    say(f"  quota: the most held in any {window_s:g} s window during the run, of the limit")
    for line in peaks.lines():
        say(line)
    say(f"  dashboard   {web}/dashboard")
    say(f"  flower      http://127.0.0.1:{settings.flower_port}")
    say(f"  quota API   {web}/api/v1/quota")
    say(f"  counter     http://127.0.0.1:{settings.counter_port}/status  (the older counter's API)")
    say(f"  logs        {log_path}")
    say(f"  try         {PING_COMMAND}")


def run_workload(
    settings: Settings,
    redis_url: str,
    honcho: subprocess.Popen,
    log_path: Path,
    *,
    consume: bool,
) -> ResultTally:
    messages: list[SampleMessage] = sample_workload(settings, DATA_DIR / "samples")
    tally = ResultTally(messages)
    settings = settings.model_copy(update={"redis_url": redis_url})
    bus = connect_bus(settings)
    client = redis.Redis.from_url(redis_url, decode_responses=True)  # the broker: queue depths
    celery = create_celery(settings)
    # Quota is state: on STATE_REDIS_URL when set (maybe a cluster), else this same client.
    state = state_redis(settings, broker=client, decode_responses=True)
    limiter, peaks = QuotaLimiter(state, settings), QuotaPeaks()
    reader = ResultReader(bus, output_queues(settings), consume=consume)
    try:
        started = time.monotonic()
        send_workload(bus, messages)
        in_queues = ", ".join(sorted({message.route.in_queue for message in messages}))
        say(f"Sent {len(messages)} sample messages to {in_queues}; results as they arrive:")
        collect_results(
            reader,
            tally,
            started + WORKLOAD_TIMEOUT_SECS,
            honcho,
            each_round=lambda: peaks.observe(limiter.all_status()),
            watcher=WaitWatcher(settings, celery, client, limiter),
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
        reader.close()
        bus.close()
        if state is not client:
            state.close()
        client.close()
        celery.close()
    return tally


def keep_running(
    settings: Settings, honcho: subprocess.Popen, tally: ResultTally, *, consume: bool
) -> None:
    """Until Ctrl-C: print every result that reaches an output queue (a late duplicate of ours,
    or anyone's own message's), labelled."""
    queues = output_queues(settings)
    how = "taking" if consume else "browsing (--no-consume: they stay for peek)"
    say(f"\nThe stack keeps running, {how} results on {', '.join(queues)}; Ctrl-C stops it.")
    bus = connect_bus(settings)
    reader = ResultReader(bus, queues, consume=consume)
    try:
        collect_results(reader, tally, float("inf"), honcho, stop_when_complete=False)
    finally:
        reader.close()
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
    parser.add_argument(
        "--no-consume",
        action="store_true",
        help="print results without taking them off the output queues, so "
        "`python -m bridge peek QUEUE` still finds them",
    )
    parser.add_argument(
        "--no-workload",
        action="store_true",
        help="start the stack without sending the sample messages",
    )
    args = parser.parse_args(argv)
    # Both explicitly: a shell starts background jobs with SIGINT ignored, and Python then
    # keeps it ignored, so Ctrl-C (or a test's SIGINT) would stop honcho but not this process.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)

    settings = settings_or_exit("make run")
    log_path = DATA_DIR / "stack.log"
    consume = not args.no_consume
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
        if args.no_workload:
            tally = ResultTally([])
        else:
            tally = run_workload(settings, redis_url, honcho, log_path, consume=consume)
        searched = args.no_workload or run_search_demo(settings, redis_url)
        # stack/call_demo.py: one emulated phone call
        called = args.no_workload or place_demo_call(settings, say)
        if args.exit_after_workload:
            clean = tally.complete and not (tally.failed or tally.duplicates)
            clean = clean and searched and called
            return 0 if clean else 1
        keep_running(settings, honcho, tally, consume=consume)
        return 1
    except KeyboardInterrupt:
        return 0
    except (StackError, RedisServerError) as error:
        say(f"make run: {error}")
        return 1
    finally:
        stop_stack(honcho, redis_server)


def stop_stack(honcho: subprocess.Popen | None, redis_server: RedisServer | None) -> None:
    """The processes that use Redis first (honcho stops them, each with its grace period), and
    Redis only once they are gone, so none of them logs a lost connection on the way out."""
    if honcho is not None:
        say("\nStopping web, worker, bridge and the rest (Redis last)…")
        # Another Ctrl-C must not abandon the stop half-way: honcho and Redis run in their own
        # sessions and would be left running.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(
                signum,
                lambda *_: say(f"  still stopping (a worker may take up to {STOP_GRACE_SECS} s)…"),
            )
        stop_processes(honcho)
    if redis_server is not None:
        say("Stopping the embedded Redis…")
        redis_server.stop()
    if honcho is not None:
        say("Stopped.")
