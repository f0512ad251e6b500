"""The live dashboard: the broadcaster's one-read-per-tick rule, the chart's history in Redis
(kept with nobody watching, one point a second whatever the number of web processes), the
WebSocket against real gunicorn, and the page itself in real headless Chromium while real
feedback tasks spend quota."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
import websocket

from bridge.metrics import Counters, Heartbeat, read_bridge_stats
from settings import Route
from settings.redis_server import free_port
from tests.support.processes import REPO_ROOT, ManagedProcess, python_args
from web.broadcaster import StatusBroadcaster
from web.history import ChartHistory

SCREENSHOT_FOR_README = REPO_ROOT / "docs" / "dashboard.png"
# Set to refresh the README's picture from this test; off so tests leave the tree clean.
UPDATE_SCREENSHOT = os.environ.get("UPDATE_DASHBOARD_SCREENSHOT") == "1"
CHROMEDRIVER = "/usr/bin/chromedriver"


# --- the broadcaster, in process -----------------------------------------------------------------
def redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return int(seconds) + int(micros) / 1e6


def test_broadcaster_reads_once_per_tick_whatever_the_number_of_viewers(redis_client) -> None:
    reads = []
    # One chart point per second is kept: give each tick's point its own (recent) second.
    start = redis_now(redis_client) - 100

    def read() -> dict:
        reads.append(time.monotonic())
        return {"n": len(reads), "point": {"t": start + len(reads)}}

    broadcaster = StatusBroadcaster(read, ChartHistory(redis_client), tick_s=0.05)
    viewers = [broadcaster.subscribe() for _ in range(5)]
    assert all(json.loads(v.next_frame(timeout=1))["type"] == "history" for v in viewers)
    seen: list[list[int]] = [[] for _ in viewers]
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        for frames, viewer in zip(seen, viewers, strict=True):
            frame = viewer.next_frame(timeout=0.01)
            if frame:
                frames.append(json.loads(frame)["n"])
    for viewer in viewers:
        broadcaster.unsubscribe(viewer)

    # Every viewer saw the same frames, and there was one read per tick, not one per viewer.
    assert 5 <= len(reads) <= 16
    assert all(frames and frames[-1] >= len(reads) - 1 for frames in seen)
    # With no viewers left the thread stops; a late viewer gets the history first.
    time.sleep(0.2)
    assert not any(t.name == "dashboard-broadcaster" for t in threading.enumerate())
    late = broadcaster.subscribe()
    history = json.loads(late.next_frame(timeout=1))
    broadcaster.unsubscribe(late)
    assert history["type"] == "history" and len(history["points"]) >= len(reads) - 1


def test_history_keeps_one_point_a_second_for_every_process_and_forgets_old_ones(
    redis_client,
) -> None:
    second = int(redis_now(redis_client)) - 3
    web_1, web_2 = ChartHistory(redis_client, keep_s=60), ChartHistory(redis_client, keep_s=60)
    assert web_1.record({"t": second - 100.5, "series": {}})  # older than the window
    assert web_1.record({"t": second + 0.1, "series": {"a": 1}})
    assert not web_2.record({"t": second + 0.6, "series": {"a": 2}})  # the same second: dropped
    assert web_2.record({"t": second + 1.5, "series": {"a": 3}})
    assert [point["series"] for point in web_1.recent()] == [{"a": 1}, {"a": 3}]
    assert web_2.recent() == web_1.recent()
    assert redis_client.ttl(web_1.key) > 0  # a history nobody writes goes away by itself


def test_recording_goes_on_with_nobody_watching_and_a_late_viewer_gets_it(redis_client) -> None:
    start = redis_now(redis_client) - 100
    reads: list[int] = []

    def read() -> dict:
        reads.append(len(reads))
        return {"point": {"t": start + len(reads), "series": {}}}

    broadcaster = StatusBroadcaster(read, ChartHistory(redis_client), tick_s=0.02)
    broadcaster.keep_recording()
    try:
        deadline = time.monotonic() + 30
        while len(reads) < 5:
            assert time.monotonic() < deadline, "the recorder did not tick"
            time.sleep(0.02)
        # A broadcaster in another web process, never ticked, serves the same history.
        other = StatusBroadcaster(read, ChartHistory(redis_client))
        viewer = other.subscribe()
        history = json.loads(viewer.next_frame(timeout=1))
        other.stop()
        assert len(history["points"]) >= 5
        assert [p["t"] for p in history["points"]] == sorted(p["t"] for p in history["points"])
    finally:
        broadcaster.stop()
    assert not any(t.name == "dashboard-broadcaster" for t in threading.enumerate())


# --- gunicorn ------------------------------------------------------------------------------------
@pytest.fixture
def start_web(conduit_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start the web app under gunicorn (as the Procfile does) on a free port; yields its URL."""
    started: list[ManagedProcess] = []

    def start(**env: str) -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = ManagedProcess(
            python_args("-m", "gunicorn", "-c", "python:web.gunicorn_conf", "web.app:create_app()"),
            {**conduit_env, "WEB_PORT": str(port), "AUTH_DISABLED": "true", **env},
            tmp_path / f"web-{port}.log",
            ready=lambda: httpx.get(f"{url}/health", timeout=1).status_code == 200,
            name="gunicorn web",
        )
        started.append(process.start())
        return url

    yield start
    for process in started:
        process.stop()


def evalsha_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def frames(socket: websocket.WebSocket) -> Iterator[dict]:
    while True:
        yield json.loads(socket.recv())


def test_gunicorn_records_the_chart_with_nobody_watching(start_web, redis_client) -> None:
    """A page opened after a run shows the minutes before it: under gunicorn the history is
    recorded from the start, not from the first viewer."""
    url = start_web()
    history = ChartHistory(redis_client)
    deadline = time.monotonic() + 60
    while len(history.recent()) < 3:
        assert time.monotonic() < deadline, "gunicorn recorded no chart history"
        time.sleep(0.2)
    socket = websocket.create_connection(url.replace("http", "ws") + "/ws/status", timeout=10)
    try:
        first = next(frames(socket))
    finally:
        socket.close()
    assert first["type"] == "history"
    assert len(first["points"]) >= 3
    assert "completion/gpt-4o" in first["points"][-1]["series"]


def test_bridge_counters_say_since_when_they_count(redis_client) -> None:
    route = Route(in_queue="form_iq", processor="feedback", out_queue="form_oq")
    counters = Counters()
    first = Heartbeat(redis_client, "bridge-a", [route], counters)
    before = redis_now(redis_client)
    first.beat()
    counters.add("form_iq", "received", 3)
    Heartbeat(redis_client, "bridge-b", [route], counters).beat()  # a later bridge: same start
    [stats] = read_bridge_stats(redis_client)["routes"]
    assert stats["received"] == 3
    assert before - 1 <= stats["counting_since"] <= before + 5


def test_status_socket_pushes_one_shared_frame_a_second(start_web, redis_client) -> None:
    url = start_web()
    ws_url = url.replace("http", "ws") + "/ws/status"
    sockets = [websocket.create_connection(ws_url, timeout=10) for _ in range(3)]
    try:
        streams = [frames(s) for s in sockets]
        assert all(next(stream)["type"] == "history" for stream in streams)
        first = next(streams[0])
        assert first["type"] == "status"
        assert {p["name"] for p in first["pools"]} >= {
            "completion/gpt-4o",
            "embedding/text-embedding-3-large",
            "whisper/whisper",
        }
        assert {"feedback", "transcribe"} <= {q["name"] for q in first["queues"]}
        assert {"alive", "bridges", "routes"} <= first["bridge"].keys()

        # Three viewers for three seconds: about three ticks of three pool reads, not nine ticks.
        before = evalsha_calls(redis_client)
        time.sleep(3)
        ticks = (evalsha_calls(redis_client) - before) / len(first["pools"])
        assert 2 <= ticks <= 5

        granted = httpx.post(f"{url}/lock", json={"app_id": "viewer-test", "token_count": 777})
        assert granted.json()["allowed"]
        deadline = time.monotonic() + 10
        for frame in streams[1]:
            completion = next(p for p in frame["pools"] if p["pool"] == "completion")
            if completion["locked_tokens"] == 777:
                assert completion["apps"]["viewer-test"]["tokens"] == 777
                assert frame["point"]["series"]["completion/gpt-4o"]["tokens"] == 777
                break
            assert time.monotonic() < deadline, "the lock never showed up on the socket"
    finally:
        for s in sockets:
            s.close()


# --- the page in headless Chromium ---------------------------------------------------------------
def chromium_driver(profile_dir: Path):
    if not (shutil.which("chromium") and Path(CHROMEDRIVER).exists()):
        pytest.fail(
            "Debian chromium and chromium-driver are needed: `make test` installs them "
            "(apt-get install -y chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1100",
        f"--user-data-dir={profile_dir}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def text_of(driver, selector: str) -> str:
    """The element's text, read in one step inside the page: the page replaces its table rows
    every frame, so an element found first and read after may be gone by then (stale)."""
    script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';"
    return str(driver.execute_script(script, selector)).strip()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


@pytest.mark.slow
def test_dashboard_moves_in_chromium_when_tasks_spend_quota(
    start_web, start_worker, start_emulator, celery_app, tmp_path
) -> None:
    emulator = start_emulator()
    start_worker(concurrency=4, queues="feedback", **emulator.client_env())
    url = start_web(**emulator.client_env())
    driver = chromium_driver(tmp_path / "chromium-profile")
    try:
        driver.get(f"{url}/dashboard")
        wait_for(lambda: text_of(driver, "#connection") == "live", 30, "the socket to go live")
        tokens_cell = 'tr[data-series="completion/gpt-4o"] td.tokens-used'
        assert text_of(driver, tokens_cell) == "0"

        for number in range(6):
            body = {
                "id": number,
                "language": "en",
                "app_id": "dashboard-demo",
                "text": f"Delivery number {number} was late but support was very helpful.",
            }
            celery_app.send_task(
                "processors.feedback",
                args=[body],
                kwargs={"out_queue": "form_oq", "message_id": str(uuid.uuid4())},
                queue="feedback",
            )

        wait_for(
            lambda: text_of(driver, tokens_cell) not in ("", "0"),
            90,
            "completion tokens to show up",
        )
        wait_for(lambda: "dashboard-demo" in text_of(driver, "#apps"), 10, "the per-app share")
        legend = text_of(driver, "#legend")
        assert "completion/gpt-4o" in legend
        time.sleep(2)  # a couple more points on the chart for the picture
        screenshot = tmp_path / "dashboard.png"
        assert driver.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000
        if UPDATE_SCREENSHOT:
            shutil.copyfile(screenshot, SCREENSHOT_FOR_README)
    finally:
        driver.quit()
