"""Whole phone calls under load: the ACS emulator places N concurrent calls against a real gunicorn.

    python -m bench.voice_calls [--calls 1,10,25]   -> bench/results/voice_calls.json

Everything runs here, as in production but with local stand-ins: an embedded Redis, the OpenAI
emulator (the LLM), the ACS emulator (HTTPS, HMAC, its own JWTs), and the web app under gunicorn
with auth on and local speech engines. For each N the web app is started fresh (engine pool and
gunicorn threads sized for N calls, so the figures show the machine, not a cap), then N calls ring
at once; each caller asks two questions in espeak-ng speech, waits for each answer and hangs up.

Each N runs ``--repeats`` times (3): latencies are the medians of the runs' figures, counts are
totals over the runs (so ``completed`` at 25 calls is out of 75); ``runs`` keeps each run's.

Per N:

- ``completed`` / ``failed``: a call fails when it is not answered, its media socket does not
  open, a question gets no answer, or it does not end in CallDisconnected;
- ``answer_p50_ms`` / ``answer_p95_ms``: from the IncomingCall event to the media socket being
  open (what the caller waits through ringing);
- ``eou_to_first_audio_p50_ms`` / ``_p95_ms``: end of the caller's speech to the agent's first
  audio frame, as the caller hears it;
- ``pool_waits``: calls that waited for an engine set;
- ``cpu_s_per_call_minute``: CPU seconds of the web process tree per minute of calls.

The machine's core count and load average are recorded; the load of other work on it shows there.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.bridge_throughput import process
from bench.report import median, percentile, write_result
from settings.calls import ACS_EMULATOR_RESOURCE_ID
from settings.redis_server import RedisServer, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["what is the weather today", "thank you very much"]
CALL_COUNTS = (1, 10, 25)
# Each N is run this many times (a fresh web process each); latencies are the medians of the
# runs' figures, counts are totals, so one noisy run on a shared machine does not decide.
REPEATS = 3
MEDIAN_KEYS = (
    "answer_p50_ms",
    "answer_p95_ms",
    "eou_to_first_audio_p50_ms",
    "eou_to_first_audio_p95_ms",
    "cpu_s_per_call_minute",
    "wall_s",
)
# A call of two questions lasts ~15 s alone; many at once on two cores take much longer.
CALLS_TIMEOUT_SECS = 600.0
API_KEY = "bench-key"


def _get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, timeout=5, **kwargs)


def run_calls(
    count: int, base_env: dict[str, str], acs_url: str, trust: ssl.SSLContext, logs: Path
) -> dict[str, Any]:
    port = free_port()
    web = f"http://127.0.0.1:{port}"
    env = {
        **base_env,
        "WEB_PORT": str(port),
        "CALLS_PUBLIC_BASE_URL": web,
        "STT_POOL_SIZE": str(count),
        "MEDIA_MAX_CALLS": str(count + 2),
        # One thread per media socket, plus the callbacks and Event Grid requests around them.
        "GUNICORN_CMD_ARGS": f"--threads {count + 16}",
    }
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:web.gunicorn_conf",
        "web.app:create_app()",
    ]
    with process(args, env, logs / f"web-{count}.log", lambda _: _ready(f"{web}/health")) as child:
        tree = psutil.Process(child.pid)
        # Let the pool finish warming (not counted against the calls).
        _wait(lambda: _pool(web)["available"] >= count, 120, "the engine pool to warm up")
        cpu_before = _cpu(tree)
        started = time.monotonic()
        placed = [
            httpx.post(
                f"{acs_url}/_emulator/acs/calls",
                json={
                    "utterances": QUESTIONS,
                    "target_url": f"{web}/api/v1/calls/incoming",
                    "target_api_key": API_KEY,
                    "transcribe": False,
                },
                verify=trust,
                timeout=30,
            ).json()["call_id"]
            for _ in range(count)
        ]
        calls = _wait(
            lambda: _finished(acs_url, trust, placed), CALLS_TIMEOUT_SECS, "every call to end"
        )
        wall = time.monotonic() - started
        cpu = _cpu(tree) - cpu_before
        pool = _pool(web)
    answer_ms = [c["answer_to_media_ms"] for c in calls if c["answer_to_media_ms"] is not None]
    eou_ms = [
        turn["eou_to_first_audio_ms"]
        for c in calls
        for turn in (c["report"] or {}).get("turns", [])
        if turn["eou_to_first_audio_ms"] is not None
    ]
    completed = [c for c in calls if _completed(c)]
    call_minutes = sum(_call_seconds(c) for c in calls) / 60
    return {
        "completed": len(completed),
        "failed": len(calls) - len(completed),
        "answer_p50_ms": round(percentile(answer_ms, 0.5), 1),
        "answer_p95_ms": round(percentile(answer_ms, 0.95), 1),
        "eou_to_first_audio_p50_ms": round(percentile(eou_ms, 0.5), 1),
        "eou_to_first_audio_p95_ms": round(percentile(eou_ms, 0.95), 1),
        "turns_answered": len(eou_ms),
        "pool_waits": pool["waits"],
        "pool_exhausted": pool["exhausted"],
        "cpu_s_per_call_minute": round(cpu / call_minutes, 2) if call_minutes else 0.0,
        "wall_s": round(wall, 1),
        "errors": sorted({e[:80] for c in calls for e in _errors(c)})[:10],
    }


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One N's figures over its repeats: medians of the latencies, totals of the counts."""
    combined: dict[str, Any] = {
        key: round(median([r[key] for r in runs]), 1) for key in MEDIAN_KEYS
    }
    for key in ("completed", "failed", "turns_answered", "pool_waits", "pool_exhausted"):
        combined[key] = sum(r[key] for r in runs)
    combined["repeats"] = len(runs)
    combined["runs"] = [
        {key: r[key] for key in (*MEDIAN_KEYS, "completed", "failed")} for r in runs
    ]
    combined["errors"] = sorted({e for r in runs for e in r["errors"]})[:10]
    return combined


def _completed(call: dict[str, Any]) -> bool:
    report = call["report"] or {}
    turns = report.get("turns", [])
    return (
        call["state"] == "disconnected"
        and not _errors(call)
        and len(turns) == len(QUESTIONS)
        and all(t["eou_to_first_audio_ms"] is not None for t in turns)
    )


def _errors(call: dict[str, Any]) -> list[str]:
    return [e for e in [call["error"], *(call["report"] or {}).get("errors", [])] if e]


def _call_seconds(call: dict[str, Any]) -> float:
    return float((call["report"] or {}).get("duration_s", 0.0))


def _finished(acs_url: str, trust: ssl.SSLContext, call_ids: list[str]) -> list[dict] | None:
    calls = [
        httpx.get(f"{acs_url}/_emulator/acs/calls/{cid}", verify=trust, timeout=30).json()
        for cid in call_ids
    ]
    done = all(c["state"] in ("disconnected", "failed", "rejected") for c in calls)
    return calls if done else None


def _pool(web: str) -> dict[str, Any]:
    status = _get(f"{web}/api/v1/calls/status", headers={"X-API-Key": API_KEY}).json()
    return status["pools"][0]


def _cpu(tree: psutil.Process) -> float:
    total = 0.0
    for proc in [tree, *tree.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _ready(url: str) -> bool:
    try:
        return _get(url).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.voice_calls", description=__doc__)
    parser.add_argument("--calls", default=",".join(map(str, CALL_COUNTS)))
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.calls.split(",") if n]
    load_before = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="bench-calls-") as scratch,
        RedisServer(Path(scratch) / "redis") as redis_server,
    ):
        logs = Path(scratch)
        acs_dir = logs / "acs"
        llm_port, acs_port = free_port(), free_port()
        base_env = {
            **os.environ,
            "CONDUIT_ENV_FILE": os.devnull,
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "WARNING",
            "REDIS_URL": redis_server.url,
            "EMULATOR_HOST": "127.0.0.1",
            "EMULATOR_PORT": str(llm_port),
            "ACS_EMULATOR_HOST": "127.0.0.1",
            "ACS_EMULATOR_PORT": str(acs_port),
            "ACS_EMULATOR_DIR": str(acs_dir),
            "ACS_CA_BUNDLE": str(acs_dir / "tls-cert.pem"),
            "ACS_RESOURCE_ID": ACS_EMULATOR_RESOURCE_ID,
            "ACS_JWKS_URL": f"https://127.0.0.1:{acs_port}/calling/keys",
            "SSL_CERT_FILE": str(acs_dir / "tls-cert.pem"),
            "AUTH_API_KEY": API_KEY,
            "LOCAL_STT_PHRASES_FILE": str(REPO_ROOT / "emulators" / "phrases.txt"),
        }
        acs_url = f"https://127.0.0.1:{acs_port}"

        def acs_ready(_: object) -> bool:
            cert = acs_dir / "tls-cert.pem"
            if not cert.exists():
                return False
            try:
                trust = ssl.create_default_context(cafile=str(cert))
                return _get(f"{acs_url}/_emulator/acs/health", verify=trust).status_code == 200
            except (OSError, httpx.HTTPError):
                return False

        llm_args = [sys.executable, "-m", "emulators"]
        acs_args = [sys.executable, "-m", "emulators.acs"]
        with (
            process(
                llm_args,
                base_env,
                logs / "llm.log",
                lambda _: _ready(f"http://127.0.0.1:{llm_port}/health"),
            ),
            process(acs_args, base_env, logs / "acs.log", acs_ready),
        ):
            trust = ssl.create_default_context(cafile=str(acs_dir / "tls-cert.pem"))
            results = {
                str(n): combine(
                    [run_calls(n, base_env, acs_url, trust, logs) for _ in range(args.repeats)]
                )
                for n in counts
            }
    figures: dict[str, object] = {
        "calls": results,
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "questions_per_call": len(QUESTIONS),
    }
    summary = ", ".join(
        f"{n} calls: {r['completed']} ok/{r['failed']} failed, answer p95 {r['answer_p95_ms']} ms, "
        f"eou→audio p95 {r['eou_to_first_audio_p95_ms']} ms"
        for n, r in results.items()
    )
    write_result("voice_calls", figures, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
