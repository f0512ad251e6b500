"""Call control through a real gunicorn against the real ACS emulator (HTTPS, HMAC, its own JWTs)
and the OpenAI emulator: Event Grid's handshake and redelivery, the caller lists, each callback
moving call state, the callback JWT cases, and whole calls (rings → answered → media socket with
the JWT → question → answer heard → caller hangs up → CallDisconnected → engines back in the pool),
one of them surviving a web restart with its memory in Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from emulators.acs.tokens import ISSUER, TokenIssuer
from settings.calls import ACS_EMULATOR_RESOURCE_ID
from settings.redis_server import free_port
from tests.support.acs_emulator import RunningAcsEmulator
from tests.support.calls_web import CALLS_API_KEY as API_KEY
from tests.support.calls_web import CallsWebStarter

WAIT_SECS = 120.0


def api(url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"X-API-Key": API_KEY, **kwargs.pop("headers", {})}
    return httpx.request(method, url + path, headers=headers, timeout=30, **kwargs)


def wait_until(check: Callable[[], Any], what: str, timeout: float = WAIT_SECS) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def finished(call: dict[str, Any]) -> bool:
    return call["state"] in ("disconnected", "failed", "rejected")


# --- Event Grid ----------------------------------------------------------------------------------
def test_event_grid_validation_handshake(start_calls_web: CallsWebStarter) -> None:
    url, _ = start_calls_web()
    event = [
        {
            "id": str(uuid.uuid4()),
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "data": {
                "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                "validationUrl": "x",
            },
        }
    ]
    headers = {"aeg-event-type": "SubscriptionValidation"}
    response = api(url, "POST", "/api/v1/calls/incoming", json=event, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    # The webhook is not open: Event Grid sends the key as a delivery header.
    assert httpx.post(f"{url}/api/v1/calls/incoming", json=event, timeout=30).status_code == 401
    bad = api(url, "POST", "/api/v1/calls/incoming", content=b"{not json")
    assert bad.status_code == 400 and "JSON" in bad.json()["detail"]


# --- callbacks -----------------------------------------------------------------------------------
def callback(call_id: str, kind: str, **data: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": str(uuid.uuid4()),
            "type": f"Microsoft.Communication.{kind}",
            "source": f"calling/callConnections/{call_id}",
            "specversion": "1.0",
            "data": {
                "callConnectionId": call_id,
                "serverCallId": "s",
                "correlationId": "c",
                **data,
            },
        }
    ]


def test_callback_tokens_are_checked(
    start_calls_web: CallsWebStarter, calls_acs: RunningAcsEmulator
) -> None:
    url, _ = start_calls_web()
    issuer = TokenIssuer(calls_acs.directory, ACS_EMULATOR_RESOURCE_ID)
    body = callback("call-jwt", "CallConnected")

    def post(token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.post(f"{url}/api/v1/calls/callbacks", json=body, headers=headers, timeout=30)

    assert post(None).status_code == 401
    assert post(TokenIssuer(calls_acs.directory, "another-resource").token()).status_code == 401
    assert post(issuer.token(lifetime_s=-120)).status_code == 401  # expired beyond the skew
    assert post(issuer.token(iss="https://evil.example")).status_code == 401
    unsigned = jwt.encode(
        {"iss": ISSUER, "aud": ACS_EMULATOR_RESOURCE_ID, "exp": time.time() + 60},
        "",
        algorithm="none",
    )
    assert post(unsigned).status_code == 401
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        {"iss": ISSUER, "aud": ACS_EMULATOR_RESOURCE_ID, "exp": time.time() + 60},
        stranger,
        algorithm="RS256",
        headers={"kid": issuer.kid},
    )
    assert post(forged).status_code == 401
    # Our API key is not an ACS token either.
    api_key_only = httpx.post(
        f"{url}/api/v1/calls/callbacks", json=body, headers={"X-API-Key": API_KEY}, timeout=30
    )
    assert api_key_only.status_code == 401
    ok = post(issuer.token())
    assert ok.status_code == 200 and ok.json() == {"applied": 1}


def test_each_callback_type_moves_call_state(
    start_calls_web, calls_acs: RunningAcsEmulator
) -> None:
    url, _ = start_calls_web()
    issuer = TokenIssuer(calls_acs.directory, ACS_EMULATOR_RESOURCE_ID)
    call_id = f"call-{uuid.uuid4().hex[:8]}"

    def send(kind: str, **data: Any) -> dict[str, Any]:
        response = httpx.post(
            f"{url}/api/v1/calls/callbacks",
            json=callback(call_id, kind, **data),
            headers={"Authorization": f"Bearer {issuer.token()}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return api(url, "GET", f"/api/v1/calls/{call_id}").json()

    assert send("CallConnected")["state"] == "connected"
    assert send("ParticipantsUpdated", participants=[{}, {}])["participants"] == "2"
    assert send("MediaStreamingStarted")["media"] == "started"
    assert send("PlayCompleted")["play"] == "completed"
    assert send("PlayFailed", resultInformation={"message": "bad file"})["play"] == "failed"
    assert send("TranscriptionStarted")["transcription"] == "started"
    assert send("TranscriptionFailed")["transcription"] == "failed"
    assert send("ContinuousDtmfRecognitionToneReceived", tone="five")["dtmf"] == "5"
    assert send("ContinuousDtmfRecognitionToneReceived", tone="pound")["dtmf"] == "5#"
    assert send("MediaStreamingStopped")["media"] == "stopped"
    before = api(url, "GET", f"/api/v1/calls/{call_id}").json()
    assert send("SomethingNew")["last_event"] == before["last_event"]  # unknown: ignored
    state = send("CallDisconnected")
    assert state["state"] == "disconnected"
    failed = send("AnswerCallFailed", resultInformation={"message": "ACS could not answer"})
    assert failed["state"] == "failed" and failed["error"] == "ACS could not answer"
    assert call_id not in [c["call_id"] for c in api(url, "GET", "/api/v1/calls").json()["calls"]]


# --- whole calls ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_whole_call_answered_once_heard_and_hung_up(
    start_calls_web, calls_acs: RunningAcsEmulator
) -> None:
    url, _ = start_calls_web()
    placed = calls_acs.place_call(
        question="what is the weather today",
        target_url=f"{url}/api/v1/calls/incoming",
        deliveries=2,  # Event Grid redelivers: Conduit answers once
        target_api_key=API_KEY,
    )
    call = calls_acs.wait_for_call(placed["call_id"], finished, timeout=WAIT_SECS)
    assert call["state"] == "disconnected", call
    assert call["answer_requests"] == 1 and not call["delivery_errors"]
    assert call["callback_failures"] == 0
    # The SDK asked for what settings say: our media socket, 16 kHz, both ways, DTMF.
    media = call["media"]
    assert media["transportUrl"].startswith(url.replace("http", "ws") + "/api/v1/media/stream")
    assert (media["audioFormat"], media["enableBidirectional"], media["enableDtmfTones"]) == (
        "pcm16KMono",
        True,
        True,
    )
    report = call["report"]
    assert not report["errors"], report
    turn = report["turns"][0]
    assert turn["eou_to_first_audio_ms"] > 0 and turn["reply_audio_s"] > 0.5
    # Conduit's view: the call went through its states and is over; its memory holds the turn.
    state = api(url, "GET", f"/api/v1/calls/{call['call_id']}").json()
    assert state["state"] == "disconnected" and state["media"] == "started"
    assert state["caller"] == "+15550100"
    history = api(url, "GET", f"/api/v1/calls/{call['call_id']}/transcript").json()["history"]
    assert history[0]["role"] == "user" and "weather" in history[0]["content"].lower()
    assert history[1]["role"] == "assistant" and history[1]["content"]
    # No thread of the call is left in the web process, and its engines are back in the pool.
    wait_until(
        lambda: api(url, "GET", "/api/v1/media/status").json()["voice_threads"] == 0,
        "the call's threads to end",
    )
    pool = wait_until(
        lambda: (
            (p := api(url, "GET", "/api/v1/calls/status").json()["pools"][0])["in_use"] == 0 and p
        ),
        "the engines back in the pool",
    )
    assert pool["acquired"] >= 1


@pytest.mark.slow
def test_denied_callers_are_rejected(
    start_calls_web: CallsWebStarter, calls_acs: RunningAcsEmulator
) -> None:
    url, _ = start_calls_web(CALLS_DENIED_CALLERS="+15550666")
    placed = calls_acs.place_call(
        question="hello world",
        caller="+15550666",
        target_url=f"{url}/api/v1/calls/incoming",
        target_api_key=API_KEY,
    )
    call = calls_acs.wait_for_call(placed["call_id"], finished, timeout=WAIT_SECS)
    assert call["state"] == "rejected" and call["error"] == "rejected: forbidden"


@pytest.mark.slow
def test_a_call_goes_on_after_a_web_restart_with_its_memory(
    start_calls_web, calls_acs: RunningAcsEmulator
) -> None:
    from emulators.acs.caller import CallScript, ScriptedCaller

    port = free_port()
    url, first = start_calls_web(port=port)
    placed = calls_acs.place_call(
        question="what is the weather today",
        target_url=f"{url}/api/v1/calls/incoming",
        target_api_key=API_KEY,
    )
    call_id = calls_acs.wait_for_call(placed["call_id"], finished, timeout=WAIT_SECS)["call_id"]
    before = api(url, "GET", f"/api/v1/calls/{call_id}/transcript").json()["history"]
    assert [m["role"] for m in before] == ["user", "assistant"]
    session_id = api(url, "GET", f"/api/v1/calls/{call_id}").json()["session_id"]

    # The web process restarts: nothing of the call is in its memory any more.
    first.stop()
    url, _ = start_calls_web(port=port)
    issuer = TokenIssuer(calls_acs.directory, ACS_EMULATOR_RESOURCE_ID)
    response = httpx.post(
        f"{url}/api/v1/calls/callbacks",
        json=callback(call_id, "PlayCompleted"),
        headers={"Authorization": f"Bearer {issuer.token()}"},
        timeout=30,
    )
    assert response.status_code == 200
    state = api(url, "GET", f"/api/v1/calls/{call_id}").json()
    assert state["play"] == "completed" and state["session_id"] == session_id
    # ACS opens the call's media socket again, to the new process: the agent goes on with the
    # same conversation (the earlier turn is still there, the new one is added to it).
    caller = ScriptedCaller(
        call_id,
        f"{url.replace('http', 'ws')}/api/v1/media/stream",
        token=issuer.token(),
        sample_rate=16000,
        script=CallScript(utterances=["thank you very much"]),
    )
    report = caller.run()
    assert not report.errors and report.turns[0].reply_audio_s > 0
    after = wait_until(
        lambda: (
            len(h := api(url, "GET", f"/api/v1/calls/{call_id}/transcript").json()["history"]) == 4
            and h
        ),
        "the new turn in the call's memory",
    )
    assert after[:2] == before
    assert after[2]["role"] == "user" and "thank" in after[2]["content"].lower()


@pytest.mark.slow
def test_conduit_places_a_call_and_hangs_it_up(
    start_calls_web: CallsWebStarter, calls_acs: RunningAcsEmulator
) -> None:
    url, _ = start_calls_web()
    refused = api(url, "POST", "/api/v1/calls/initiate", json={"target": "+15550123"})
    assert refused.status_code == 400 and "ACS_SOURCE_PHONE_NUMBER" in refused.json()["detail"]
    assert api(url, "POST", "/api/v1/calls/initiate", json={}).status_code == 400

    placed = api(url, "POST", "/api/v1/calls/initiate", json={"target": "8:acs:callee-1"})
    assert placed.status_code == 201, placed.text
    call_id = placed.json()["call_id"]
    # The emulator saw create_call with our callback and media options.
    emulated = calls_acs.call(call_id)
    assert emulated["direction"] == "outbound" and emulated["target"] == "8:acs:callee-1"
    assert emulated["media"]["transportUrl"].startswith(url.replace("http", "ws"))
    state = api(url, "GET", f"/api/v1/calls/{call_id}").json()
    assert state["direction"] == "outbound" and state["caller"] == "8:acs:callee-1"

    hung_up = api(url, "POST", f"/api/v1/calls/{call_id}/hangup")
    assert hung_up.status_code == 202
    emulated = calls_acs.wait_for_call(call_id, finished)
    assert emulated["state"] == "disconnected"
    wait_until(
        lambda: api(url, "GET", f"/api/v1/calls/{call_id}").json()["state"] == "disconnected",
        "CallDisconnected to reach Conduit",
    )
    assert api(url, "POST", "/api/v1/calls/nope/hangup").status_code == 404


@pytest.mark.slow
def test_a_call_in_transcription_mode(
    start_calls_web: CallsWebStarter, calls_acs: RunningAcsEmulator
) -> None:
    url, _ = start_calls_web(ACS_STREAMING_MODE="TRANSCRIPTION")
    placed = calls_acs.place_call(
        question="what is the weather today",
        target_url=f"{url}/api/v1/calls/incoming",
        target_api_key=API_KEY,
    )
    call = calls_acs.wait_for_call(placed["call_id"], finished, timeout=WAIT_SECS)
    # answer_call asked ACS to transcribe (with intermediate results) instead of streaming audio.
    assert call["media"] is None
    options = call["transcription"]
    assert options["locale"] == "en-US" and options["startTranscription"]
    assert options["enableIntermediateResults"] and options["transportType"] == "websocket"
    assert call["state"] == "disconnected" and not call["report"]["errors"], call
    assert call["report"]["turns"][0]["reply_audio_s"] > 0.5
    state = api(url, "GET", f"/api/v1/calls/{call['call_id']}").json()
    assert state.get("transcription") == "started" and state["state"] == "disconnected", state
    history = api(url, "GET", f"/api/v1/calls/{call['call_id']}/transcript").json()["history"]
    assert history[0] == {"role": "user", "content": "what is the weather today"}


@pytest.mark.slow
def test_no_free_engines_closes_the_media_socket_with_a_clear_reason(
    start_calls_web: CallsWebStarter, calls_acs: RunningAcsEmulator
) -> None:
    url, _ = start_calls_web(STT_POOL_SIZE="1", POOL_ACQUIRE_TIMEOUT_SECONDS="0.2")
    ring = {"target_url": f"{url}/api/v1/calls/incoming", "target_api_key": API_KEY}
    first = calls_acs.place_call(question="what is the weather today", **ring)
    calls_acs.wait_for_call(first["call_id"], lambda c: c["answer_to_media_ms"] is not None)
    second = calls_acs.place_call(question="hello world", **ring)
    refused = calls_acs.wait_for_call(second["call_id"], finished)
    assert any("no engines free" in e for e in refused["report"]["errors"]), refused["report"]
    served = calls_acs.wait_for_call(first["call_id"], finished)
    assert not served["report"]["errors"] and served["report"]["turns"][0]["reply_audio_s"] > 0
    pool = api(url, "GET", "/api/v1/calls/status").json()["pools"][0]
    assert pool["exhausted"] == 1 and pool["size"] == 1 and pool["in_use"] == 0
