"""Live calls on the dashboard: call events and a call's transcript reach viewers on another
gunicorn process (two replicas, one Redis), and the Calls panel and call page in real Chromium."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import websocket

from emulators.acs.tokens import TokenIssuer
from settings.calls import ACS_EMULATOR_RESOURCE_ID
from tests.support.acs_emulator import RunningAcsEmulator
from tests.support.browser import chromium_driver, text_of
from tests.support.calls_web import CALLS_API_KEY, CallsWebStarter
from tests.support.waiting import wait_until

WAIT_SECS = 120.0


def next_matching(socket: websocket.WebSocket, check, timeout: float = WAIT_SECS) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        socket.settimeout(max(0.1, deadline - time.monotonic()))
        frame = json.loads(socket.recv())
        if check(frame):
            return frame
    raise TimeoutError("no matching frame")


@pytest.mark.slow
def test_events_and_transcripts_fan_out_across_two_web_processes(
    start_calls_web: CallsWebStarter, calls_acs: RunningAcsEmulator
) -> None:
    replica_a, _ = start_calls_web()
    replica_b, _ = start_calls_web()
    token = f"access_token={CALLS_API_KEY}"
    calls_on_b = websocket.create_connection(
        f"{replica_b.replace('http', 'ws')}/ws/calls?{token}", timeout=30
    )
    try:
        assert json.loads(calls_on_b.recv()) == {"type": "calls", "calls": []}
        # A callback served by replica A is seen by a dashboard on replica B.
        call_id = f"call-{uuid.uuid4().hex[:8]}"
        issuer = TokenIssuer(calls_acs.directory, ACS_EMULATOR_RESOURCE_ID)
        body = [
            {
                "id": str(uuid.uuid4()),
                "type": "Microsoft.Communication.CallConnected",
                "data": {"callConnectionId": call_id},
            }
        ]
        response = httpx.post(
            f"{replica_a}/api/v1/calls/callbacks",
            json=body,
            headers={"Authorization": f"Bearer {issuer.token()}"},
            timeout=30,
        )
        assert response.status_code == 200
        frame = next_matching(calls_on_b, lambda f: f.get("call_id") == call_id)
        assert frame["type"] == "call" and frame["state"] == "connected"

        # A whole call answered by replica A: B's dashboard sees it answered and ended, and B's call
        # page socket gets its transcript.
        placed = calls_acs.place_call(
            question="what is the weather today",
            target_url=f"{replica_a}/api/v1/calls/incoming",
            target_api_key=CALLS_API_KEY,
        )
        answered = next_matching(
            calls_on_b,
            lambda f: f.get("call_id") == placed["call_id"] and f.get("event") == "answered",
        )
        session = answered["session_id"]
        page_socket = websocket.create_connection(
            f"{replica_b.replace('http', 'ws')}/ws/calls?session_id={session}&{token}",
            timeout=30,
        )
        try:
            lines: list[dict[str, Any]] = []
            deadline = time.monotonic() + WAIT_SECS
            while len([m for m in lines if m.get("role") == "assistant"]) < 1:
                assert time.monotonic() < deadline, f"no transcript on replica B: {lines}"
                frame = json.loads(page_socket.recv())
                if frame["type"] == "history":
                    lines = list(frame["history"])
                elif frame["type"] == "transcript":
                    assert frame["call_id"] == placed["call_id"]
                    lines.append(frame)
            assert lines[0]["role"] == "user" and "weather" in lines[0]["content"].lower()
        finally:
            page_socket.close()
        ended = next_matching(
            calls_on_b,
            lambda f: f.get("call_id") == placed["call_id"] and f.get("state") == "disconnected",
        )
        assert ended["caller"] == "+15550100"
    finally:
        calls_on_b.close()


@pytest.mark.slow
def test_calls_panel_and_call_page_in_chromium(
    start_calls_web: CallsWebStarter, calls_acs: RunningAcsEmulator, tmp_path: Path
) -> None:
    url, _ = start_calls_web()
    driver = chromium_driver(tmp_path / "chromium-profile")
    try:
        driver.get(f"{url}/dashboard?access_token={CALLS_API_KEY}")
        wait_until(
            lambda: text_of(driver, "#calls-state") == "live", 30, "the calls socket to go live"
        )
        placed = calls_acs.place_call(
            utterances=["what is the weather today", "thank you very much"],
            target_url=f"{url}/api/v1/calls/incoming",
            target_api_key=CALLS_API_KEY,
        )
        row = f'tr[data-call-id="{placed["call_id"]}"]'
        wait_until(
            lambda: text_of(driver, f"{row} td.caller") == "+15550100", 60, "the call in the panel"
        )
        wait_until(
            lambda: text_of(driver, f"{row} td.media") == "started",
            60,
            "media streaming in the panel",
        )
        # The call's page: the transcript grows while the call goes on.
        from selenium.webdriver.common.by import By

        driver.find_element(By.CSS_SELECTOR, f"{row} td.call a").click()
        wait_until(lambda: text_of(driver, "#connection") == "live", 30, "the call page to go live")
        wait_until(
            lambda: len(driver.find_elements(By.CSS_SELECTOR, "#transcript li.assistant")) >= 2,
            WAIT_SECS,
            "both answers on the call page",
        )
        caller_lines = [
            e.text for e in driver.find_elements(By.CSS_SELECTOR, "#transcript li.user .text")
        ]
        assert "weather" in caller_lines[0].lower() and "thank" in caller_lines[1].lower()
        wait_until(
            lambda: text_of(driver, "#call-state") == "disconnected", WAIT_SECS, "the hang-up"
        )
    finally:
        driver.quit()
