"""The ACS emulator: HMAC as ACS checks it, its JWTs and JWKS, the real SDK's requests, and a
whole call against a small echo agent served in the test (so the emulator is checked on its own,
apart from Conduit's voice agent)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import jwt
import pytest
from azure.communication.callautomation import (
    AudioFormat,
    CallAutomationClient,
    FileSource,
    MediaStreamingAudioChannelType,
    MediaStreamingContentType,
    MediaStreamingOptions,
    StreamingTransportType,
)
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from flask import Flask, request
from flask_sock import Sock
from werkzeug.serving import make_server

from emulators.acs.hmac_auth import HmacError, sign, verify
from settings.calls import ACS_EMULATOR_DEV_KEY, ACS_EMULATOR_RESOURCE_ID
from settings.redis_server import free_port
from tests.support.acs_emulator import RunningAcsEmulator

KEY = ACS_EMULATOR_DEV_KEY


# --- HMAC, no I/O --------------------------------------------------------------------------------
def _now() -> str:
    return format_datetime(datetime.now(UTC), usegmt=True)


def test_hmac_round_trip_and_each_way_it_fails() -> None:
    body = b'{"a": 1}'
    headers = {
        "Host": "127.0.0.1:9",
        **sign(KEY, "POST", "/x?api-version=1", host="127.0.0.1:9", body=body, date=_now()),
    }
    verify(KEY, "POST", "/x?api-version=1", headers=headers, body=body)
    with pytest.raises(HmacError, match="does not match the body"):
        verify(KEY, "POST", "/x?api-version=1", headers=headers, body=b'{"a": 2}')
    with pytest.raises(HmacError, match="wrong access key"):
        verify(
            base64.b64encode(b"other").decode(),
            "POST",
            "/x?api-version=1",
            headers=headers,
            body=body,
        )
    with pytest.raises(HmacError, match="wrong access key"):
        verify(KEY, "POST", "/y?api-version=1", headers=headers, body=body)
    old = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    stale = {
        "Host": "127.0.0.1:9",
        **sign(KEY, "POST", "/x", host="127.0.0.1:9", body=body, date=old),
    }
    with pytest.raises(HmacError, match="too far"):
        verify(KEY, "POST", "/x", headers=stale, body=body)
    with pytest.raises(HmacError, match="HMAC-SHA256"):
        verify(KEY, "POST", "/x", headers={"Authorization": "Bearer x"}, body=body)


# --- the emulator process ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def acs(module_acs_emulator_starter) -> RunningAcsEmulator:
    return module_acs_emulator_starter()


def test_unsigned_and_wrongly_signed_requests_are_refused(acs: RunningAcsEmulator) -> None:
    response = acs.http("POST", "/calling/callConnections:answer?api-version=2026-03-12", json={})
    assert response.status_code == 401
    assert "HMAC-SHA256" in response.json()["error"]["message"]
    wrong = base64.b64encode(b"not the key").decode()
    with (
        CallAutomationClient.from_connection_string(
            f"endpoint={acs.url}/;accesskey={wrong}", connection_verify=acs.ca_file
        ) as client,
        pytest.raises(ClientAuthenticationError),
    ):
        client.answer_call("context", "https://example.invalid/cb")


def test_the_sdk_is_signed_correctly_and_gets_acs_errors(acs: RunningAcsEmulator) -> None:
    with acs.call_automation_client() as client:
        with pytest.raises(ResourceNotFoundError, match="incomingCallContext"):
            client.answer_call("not-a-context", "https://example.invalid/cb")
        # The call connection client shares the automation client's pipeline.
        with pytest.raises(ResourceNotFoundError):
            client.get_call_connection("nope").hang_up(is_for_everyone=True)


def test_tokens_verify_against_the_published_jwks(acs: RunningAcsEmulator) -> None:
    keys = acs.http("GET", "/calling/keys").json()["keys"]
    assert keys[0]["kty"] == "RSA" and keys[0]["alg"] == "RS256"
    # A token as the emulator puts on a callback, taken from a real delivery below; here signed
    # by the module's own issuer to check the published key matches the signing key.
    from emulators.acs.tokens import ISSUER, TokenIssuer

    issuer = TokenIssuer(acs.directory, ACS_EMULATOR_RESOURCE_ID)
    token = issuer.token()
    key = jwt.PyJWK(keys[0]).key
    claims = jwt.decode(
        token, key, algorithms=["RS256"], audience=ACS_EMULATOR_RESOURCE_ID, issuer=ISSUER
    )
    assert claims["exp"] - claims["iat"] == 300


# --- a whole call against an echo agent ----------------------------------------------------------
class EchoAgent:
    """A stand-in for a voice agent, served on a free port: answers IncomingCall with the real SDK,
    records callbacks, and on the media socket plays back what the caller said (paced 20 ms),
    sending StopAudio when the caller speaks over it."""

    def __init__(self, acs: RunningAcsEmulator) -> None:
        self.acs = acs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.events: list[dict[str, Any]] = []
        self.callback_auth: list[str] = []
        self.media_headers: dict[str, str] = {}
        self.metadata: dict[str, Any] = {}
        self.answered = 0
        app = Flask("echo-agent")
        sock = Sock(app)
        app.add_url_rule("/incoming", view_func=self._incoming, methods=["POST"])
        app.add_url_rule("/callbacks", view_func=self._callbacks, methods=["POST"])
        sock.route("/media")(self._media)
        self.server = make_server("127.0.0.1", self.port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _incoming(self) -> tuple[str, int]:
        for event in request.get_json():
            options = MediaStreamingOptions(
                transport_url=f"ws://127.0.0.1:{self.port}/media",
                transport_type=StreamingTransportType.WEBSOCKET,
                content_type=MediaStreamingContentType.AUDIO,
                audio_channel_type=MediaStreamingAudioChannelType.MIXED,
                start_media_streaming=True,
                enable_bidirectional=True,
                enable_dtmf_tones=True,
                audio_format=AudioFormat.PCM16_K_MONO,
            )
            try:
                with self.acs.call_automation_client() as client:
                    client.answer_call(
                        event["data"]["incomingCallContext"],
                        f"{self.url}/callbacks",
                        media_streaming=options,
                        operation_context="echo",
                    )
            except HttpResponseError:
                continue  # a redelivery of a call already answered
            self.answered += 1
        return "{}", 200

    def _callbacks(self) -> tuple[str, int]:
        self.callback_auth.append(request.headers.get("Authorization", ""))
        events = request.get_json()
        self.events.extend(events)
        for event in events:
            if event["type"] == "Microsoft.Communication.CallConnected":
                # A prompt played through the REST API, as an IVR would.
                with self.acs.call_automation_client() as client:
                    client.get_call_connection(event["data"]["callConnectionId"]).play_media(
                        FileSource("https://example.invalid/welcome.wav"),
                        operation_context="welcome",
                    )
        return "{}", 200

    def _media(self, ws: Any) -> None:
        import time

        self.media_headers = dict(request.headers)
        heard: list[bytes] = []
        speaking_back: list[bytes] = []
        last_speech = 0.0
        while ws.connected:
            text = ws.receive(timeout=0.02)
            now = time.monotonic()
            if text is not None:
                message = json.loads(text)
                if message["kind"] == "AudioMetadata":
                    self.metadata = message["audioMetadata"]
                elif message["kind"] == "AudioData" and not message["audioData"]["silent"]:
                    if speaking_back:  # the caller talks over us: barge-in
                        speaking_back.clear()
                        ws.send(
                            json.dumps({"Kind": "StopAudio", "AudioData": None, "StopAudio": {}})
                        )
                    heard.append(base64.b64decode(message["audioData"]["data"]))
                    last_speech = now
            if heard and now - last_speech > 0.3:
                speaking_back, heard = list(heard), []
            if speaking_back:
                frame = speaking_back.pop(0)
                ws.send(
                    json.dumps(
                        {
                            "Kind": "AudioData",
                            "AudioData": {"Data": base64.b64encode(frame).decode()},
                            "StopAudio": None,
                        }
                    )
                )

    def __enter__(self) -> EchoAgent:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(10)


@pytest.fixture
def echo_agent(acs: RunningAcsEmulator) -> Iterator[EchoAgent]:
    with EchoAgent(acs) as agent:
        yield agent


@pytest.mark.slow
def test_a_whole_call_rings_answers_streams_and_reports(
    acs: RunningAcsEmulator, echo_agent: EchoAgent
) -> None:
    placed = acs.place_call(
        question="what is the weather today",
        target_url=f"{echo_agent.url}/incoming",
        deliveries=2,  # Event Grid may deliver twice; the agent answers both, ACS accepts one
        dtmf="1",
    )
    call = acs.wait_for_call(placed["call_id"], lambda c: c["state"] in ("disconnected", "failed"))
    assert call["state"] == "disconnected", call
    assert call["answer_requests"] == 2 and echo_agent.answered == 1
    assert call["answer_to_media_ms"] > 0
    # The SDK's answer request carried the media options, as the emulator saw them.
    assert call["media"]["transportUrl"].endswith("/media")
    assert call["media"]["audioFormat"] == "pcm16KMono" and call["media"]["enableBidirectional"]
    assert echo_agent.metadata == {
        "subscriptionId": call["call_id"],
        "encoding": "PCM",
        "sampleRate": 16000,
        "channels": 1,
        "length": 640,
    }
    assert echo_agent.media_headers["X-Ms-Call-Connection-Id"] == call["call_id"]
    # Callbacks in ACS's order, each with a bearer token for our audience.
    kinds = [e["type"].removeprefix("Microsoft.Communication.") for e in echo_agent.events]
    lifecycle = [k for k in kinds if not k.startswith("Play")]
    assert lifecycle[:3] == ["CallConnected", "ParticipantsUpdated", "MediaStreamingStarted"]
    played = [e for e in echo_agent.events if e["type"].endswith(("PlayStarted", "PlayCompleted"))]
    assert [e["data"]["operationContext"] for e in played] == ["welcome", "welcome"]
    assert kinds[-1] == "CallDisconnected"
    assert all(e["data"]["callConnectionId"] == call["call_id"] for e in echo_agent.events)
    assert all(a.startswith("Bearer ") for a in echo_agent.callback_auth)
    claims = jwt.decode(echo_agent.callback_auth[0][7:], options={"verify_signature": False})
    assert claims["aud"] == ACS_EMULATOR_RESOURCE_ID
    # The report: the echo is what the caller said, heard by the local recogniser.
    report = call["report"]
    turn = report["turns"][0]
    assert turn["caller_heard_as"].lower().startswith("what is the weather today")
    assert "weather" in turn["agent_said"].lower()
    assert turn["eou_to_first_audio_ms"] > 0 and turn["reply_audio_s"] > 0.5
    assert report["dtmf_sent"] == "1" and not report["errors"]


@pytest.mark.slow
def test_barge_in_gets_stop_audio_timed(acs: RunningAcsEmulator, echo_agent: EchoAgent) -> None:
    placed = acs.place_call(
        question="hello i would like to check the status of my order",
        barge_in="goodbye",
        barge_in_after_s=0.5,
        target_url=f"{echo_agent.url}/incoming",
    )
    call = acs.wait_for_call(placed["call_id"], lambda c: c["state"] in ("disconnected", "failed"))
    report = call["report"]
    assert report["stop_audio_received"] >= 1
    assert (
        len(report["barge_in_to_stop_audio_ms"]) == 1 and report["barge_in_to_stop_audio_ms"][0] > 0
    )
    # The interrupted reply is shorter than the question it echoes.
    assert report["turns"][0]["reply_audio_s"] < 2.5
    assert report["turns"][1]["said"] == "goodbye"
