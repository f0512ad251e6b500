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
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
import redis
import websocket

from bridge.metrics import Counters, Heartbeat, read_bridge_stats
from quota import QuotaLimiter
from quota.scripts import sha_of
from settings import Route, load_settings
from tests.support.browser import chromium_driver, text_of
from tests.support.processes import REPO_ROOT
from tests.support.waiting import wait_until
from web.broadcaster import StatusBroadcaster, Subscription
from web.history import ChartHistory
from web.snapshot import SnapshotReader

SCREENSHOT_FOR_README = REPO_ROOT / "docs" / "dashboard.png"
# Set to refresh the README's picture from this test; off so tests leave the tree clean.
UPDATE_SCREENSHOT = os.environ.get("UPDATE_DASHBOARD_SCREENSHOT") == "1"


# --- the broadcaster, in process -----------------------------------------------------------------
def redis_now(client: redis.Redis) -> float:
    # redis-py types a sync client's replies as "maybe awaitable": cast to what they are.
    seconds, micros = cast(tuple[int, int], client.time())
    return int(seconds) + int(micros) / 1e6


def next_json(viewer: Subscription) -> dict[str, Any]:
    """The viewer's next frame, which comes within a second."""
    frame = viewer.next_frame(timeout=1)
    assert frame is not None, "no frame within a second"
    return json.loads(frame)


def test_broadcaster_reads_once_per_tick_whatever_the_number_of_viewers(redis_client) -> None:
    reads = []
    # One chart point per second is kept: give each tick's point its own (recent) second.
    start = redis_now(redis_client) - 100

    def read() -> dict:
        reads.append(time.monotonic())
        return {"n": len(reads), "point": {"t": start + len(reads)}}

    broadcaster = StatusBroadcaster(read, ChartHistory(redis_client), tick_s=0.05)
    viewers = [broadcaster.subscribe() for _ in range(5)]
    assert all(next_json(v)["type"] == "history" for v in viewers)
    seen: list[list[int]] = [[] for _ in viewers]

    def every_viewer_saw_five_frames() -> bool:
        for frames, viewer in zip(seen, viewers, strict=True):
            frame = viewer.next_frame(timeout=0.01)  # the wait between polls
            if frame:
                frames.append(json.loads(frame)["n"])
        return all(len(frames) >= 5 for frames in seen)

    wait_until(every_viewer_saw_five_frames, 30, "five frames on every viewer", interval=0)
    for viewer in viewers:
        broadcaster.unsubscribe(viewer)

    # Every viewer saw the same frames, and there was one read per tick, not one per viewer.
    assert 5 <= len(reads) <= 16
    assert all(frames and frames[-1] >= len(reads) - 1 for frames in seen)
    # With no viewers left the thread stops; a late viewer gets the history first.
    wait_until(
        lambda: not any(t.name == "dashboard-broadcaster" for t in threading.enumerate()),
        10,
        "the broadcaster's thread to stop with no viewer left",
    )
    late = broadcaster.subscribe()
    history = next_json(late)
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
        wait_until(lambda: len(reads) >= 5, 30, "the recorder to tick five times", interval=0.02)
        # A broadcaster in another web process, never ticked, serves the same history.
        other = StatusBroadcaster(read, ChartHistory(redis_client))
        viewer = other.subscribe()
        history = next_json(viewer)
        other.stop()
        assert len(history["points"]) >= 5
        assert [p["t"] for p in history["points"]] == sorted(p["t"] for p in history["points"])
    finally:
        broadcaster.stop()
    assert not any(t.name == "dashboard-broadcaster" for t in threading.enumerate())


# --- gunicorn ------------------------------------------------------------------------------------
def evalsha_calls(client: redis.Redis) -> int:
    stats = cast(dict[str, Any], client.info("commandstats"))
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def frames(socket: websocket.WebSocket) -> Iterator[dict]:
    while True:
        yield json.loads(socket.recv())


def test_gunicorn_records_the_chart_with_nobody_watching(start_web, redis_client) -> None:
    """A page opened after a run shows the minutes before it: under gunicorn the history is
    recorded from the start, not from the first viewer."""
    url = start_web()
    history = ChartHistory(redis_client)
    wait_until(lambda: len(history.recent()) >= 3, 60, "gunicorn to record three chart points")
    socket = websocket.create_connection(url.replace("http", "ws") + "/ws/status", timeout=10)
    try:
        first = next(frames(socket))
    finally:
        socket.close()
    assert first["type"] == "history"
    assert len(first["points"]) >= 3
    assert "completion/gpt-4o" in first["points"][-1]["series"]


def test_a_snapshot_loads_the_status_script_again_after_a_flush(redis_client) -> None:
    limiter = QuotaLimiter(redis_client, load_settings())
    assert limiter.acquire("completion", "gpt-4o", 10, "a").allowed
    reader = SnapshotReader(redis_client, redis_client, limiter, [])
    assert reader.read()["pools"]  # the settings' deployments, read with the status script
    redis_client.script_flush()
    views = {view["name"]: view for view in reader.read()["pools"]}
    assert views["completion/gpt-4o"]["locked_tokens"] == 10
    assert redis_client.script_exists(sha_of("status")) == [True]


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

        # Three viewers over three frames of one of them: about three ticks of three pool reads,
        # not nine ticks. Counted in frames, not seconds, so a slow machine cannot skew it (one
        # frame may have been queued before `before`, one tick may be under way after).
        before = evalsha_calls(redis_client)
        for _ in range(3):
            assert next(streams[0])["type"] == "status"
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


@pytest.mark.slow
def test_dashboard_moves_in_chromium_when_tasks_spend_quota(
    start_web, start_worker, start_emulator, celery_app, tmp_path, *, redis_client
) -> None:
    emulator = start_emulator()
    start_worker(concurrency=4, queues="feedback", **emulator.client_env())
    url = start_web(**emulator.client_env())
    driver = chromium_driver(tmp_path / "chromium-profile")
    try:
        driver.get(f"{url}/dashboard")
        wait_until(lambda: text_of(driver, "#connection") == "live", 30, "the socket to go live")
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

        wait_until(
            lambda: text_of(driver, tokens_cell) not in ("", "0"),
            90,
            "completion tokens to show up",
        )
        wait_until(lambda: "dashboard-demo" in text_of(driver, "#apps"), 10, "the per-app share")
        legend = text_of(driver, "#legend")
        assert "completion/gpt-4o" in legend
        # A couple more points on the chart for the picture.
        points = len(ChartHistory(redis_client).recent())
        wait_until(
            lambda: len(ChartHistory(redis_client).recent()) >= points + 2, 30, "two more points"
        )
        screenshot = tmp_path / "dashboard.png"
        assert driver.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000
        if UPDATE_SCREENSHOT:
            shutil.copyfile(screenshot, SCREENSHOT_FOR_README)
    finally:
        driver.quit()


@pytest.mark.parametrize("state_url", ["cluster"], indirect=True)
def test_with_the_state_on_a_cluster_the_web_reads_quota_and_bridge_there(
    redis_url, state_url
) -> None:
    # STATE_REDIS_URL on a Redis Cluster: the dashboard's quota and bridge stats and /ready's
    # Redis check go there, the Celery queue depths to the broker's plain Redis.
    from web.health import check_bridge, check_redis
    from web.services import Services

    settings = load_settings(redis_url=redis_url, state_redis_url=state_url)
    conduit = Services.create(settings)
    try:
        assert conduit.state is not conduit.redis
        assert conduit.limiter.acquire("completion", "gpt-4o", 10, "a").allowed
        route = Route(in_queue="form_iq", processor="feedback", out_queue="form_oq")
        counters = Counters()
        counters.add("form_iq", "received", 3)
        Heartbeat(conduit.state, "bridge-c", [route], counters).beat()
        conduit.redis.rpush("feedback", "a task waiting")  # a Celery queue, on the broker

        frame = conduit.snapshot.read()
        views = {view["name"]: view for view in frame["pools"]}
        assert views["completion/gpt-4o"]["locked_tokens"] == 10
        [stats] = frame["bridge"]["routes"]
        assert (stats["received"], stats["celery_backlog"]) == (3, 1)
        assert check_redis(conduit) == "PING answered by the broker and the state Redis"
        assert check_bridge(conduit) == "1 bridge(s) beating"
        assert conduit.redis.exists("conduit:bridge:heartbeats") == 0  # not on the broker
    finally:
        conduit.celery.close()
        conduit.state.close()
        conduit.redis.close()
