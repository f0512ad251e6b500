"""The media WebSocket end to end: real gunicorn, the emulator LLM, local speech engines, and the
ConversationSimulator as the ACS side. Every call is a real socket with real-time audio."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import websocket
from openai.types.chat import ChatCompletionMessageParam

from tests.support.jwks import new_rsa_key, private_pem, serve_jwks
from tests.support.web import WebStarter
from voice import protocol
from voice.engines.local import LocalRecognizer
from voice.simulate import ConversationSimulator, sign_token, summarize

pytestmark = pytest.mark.slow

QUESTION = "what is the weather today"
BARGE = "thank you very much"
CALLER_PHRASES = [QUESTION, BARGE, "hello world", "goodbye", "i would like a refund"]
SYSTEM_PROMPT = "You are a helpful phone agent."
MAX_TOKENS = 40
AUDIENCE = "00000000-acs-resource-test"
CLIENT_TIMEOUT_SECS = 30


@pytest.fixture
def start_web(conduit_env: dict[str, str], tmp_path: Path) -> Iterator[WebStarter]:
    starter = WebStarter(conduit_env, tmp_path)
    yield starter
    starter.close()


@pytest.fixture
def voice_env(start_emulator, tmp_path: Path) -> dict[str, str]:
    """The web app's environment: the emulator LLM, a phrase grammar for the agent's ears."""
    phrases = tmp_path / "phrases.txt"
    phrases.write_text("\n".join(CALLER_PHRASES) + "\n")
    emulator = start_emulator()
    return {
        **emulator.client_env(),
        "LOCAL_STT_PHRASES_FILE": str(phrases),
        "VOICE_SYSTEM_PROMPT": SYSTEM_PROMPT,
        "VOICE_MAX_TOKENS": str(MAX_TOKENS),
        "AUTH_DISABLED": "true",
    }


def expected_answer(env: dict[str, str], question: str) -> str:
    """What the emulator answers the agent's first turn (its text is a function of the request)."""
    from openai import AzureOpenAI

    client = AzureOpenAI(
        azure_endpoint=f"http://127.0.0.1:{env['EMULATOR_PORT']}",
        api_key=env["EMULATOR_API_KEY"],
        api_version="2024-10-21",
        max_retries=0,
        timeout=CLIENT_TIMEOUT_SECS,
    )
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": question},
    ]
    answer = client.chat.completions.create(
        model="gpt-4o", messages=messages, max_tokens=MAX_TOKENS
    )
    client.close()
    return answer.choices[0].message.content or ""


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def sentences(text: str) -> list[str]:
    return [" ".join(words(part)) for part in re.split(r"[.!?]", text) if words(part)]


def transcribe_against(pcm: bytes, phrases: list[str]) -> str:
    """The reply audio decoded with a grammar of the answer's sentences and the caller's phrases
    (distractors): exact when the audio says the answer, something else when it does not."""
    recognizer = LocalRecognizer(phrases + CALLER_PHRASES, wide_beams=True)
    try:
        return recognizer.transcribe(pcm)
    finally:
        recognizer.close()


def voice_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(("voice-", "simulator"))]


def status(url: str) -> dict:
    return httpx.get(f"{url}/api/v1/media/status", timeout=CLIENT_TIMEOUT_SECS).json()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# --- the answer, heard ---------------------------------------------------------------------------
def test_a_spoken_question_is_answered_in_speech_with_the_llm_text(start_web, voice_env) -> None:
    url = start_web(**voice_env)
    results = ConversationSimulator(url, [QUESTION]).run()
    [call] = results
    assert not call.errors, call.errors
    [turn] = call.turns
    assert turn.eou_to_first_audio_ms is not None and turn.eou_to_first_audio_ms > 0
    answer = expected_answer(voice_env, QUESTION)
    heard = transcribe_against(turn.reply_audio, sentences(answer))
    assert words(heard) == words(answer)
    # The whole answer was played, at real-time pace: its audio lasts about as long as it took.
    assert turn.reply_secs > 1.0
    # The call is over on the server too: no call left, latencies recorded for the process.
    wait_for(lambda: status(url)["active_calls"] == 0, 30, "the call to end on the server")
    report = status(url)
    assert report["latency"]["first_frame_ms"]["count"] >= 1
    assert report["recent_calls"][-1]["turns"] == 1
    # No thread of the call is left, on either side.
    assert report["voice_threads"] == 0
    assert not voice_threads()


def test_the_reply_is_not_the_answer_to_another_question(start_web, voice_env) -> None:
    """The transcription check can fail: another question's answer does not pass for this one."""
    url = start_web(**voice_env)
    [call] = ConversationSimulator(url, ["hello world"]).run()
    [turn] = call.turns
    other = expected_answer(voice_env, QUESTION)
    own = expected_answer(voice_env, "hello world")
    assert words(other) != words(own)
    heard = transcribe_against(turn.reply_audio, sentences(other) + sentences(own))
    assert words(heard) == words(own)


def test_24khz_calls_are_answered_at_24khz(start_web, voice_env) -> None:
    url = start_web(**voice_env)
    [call] = ConversationSimulator(url, [QUESTION], sample_rate=24000).run()
    assert not call.errors, call.errors
    [turn] = call.turns
    assert turn.eou_to_first_audio_ms is not None
    from voice.audio import resample

    answer = expected_answer(voice_env, QUESTION)
    heard = transcribe_against(resample(turn.reply_audio, 24000, 16000), sentences(answer))
    assert words(heard) == words(answer)


# --- barge-in -------------------------------------------------------------------------------------
def test_speech_over_the_agent_stops_it_and_history_keeps_only_what_was_heard(
    start_web, voice_env
) -> None:
    url = start_web(**voice_env)
    [call] = ConversationSimulator(url, [QUESTION, BARGE], barge_in=True).run()
    assert not call.errors, call.errors
    interrupted, after = call.turns
    assert interrupted.barge_in_ms is not None
    assert interrupted.stale_frames == 0
    # The barge-in phrase was heard and answered as the next turn.
    assert after.eou_to_first_audio_ms is not None
    wait_for(lambda: status(url)["active_calls"] == 0, 30, "the call to end")
    [ended] = status(url)["recent_calls"]
    assert ended["interruptions"] == 1
    assert ended["latency"]["barge_in_ms"]["count"] == 1
    # History: the played part only. The server reports it per call through the log; here the
    # agent heard ~0.6 s of the answer before the barge-in, so far fewer words than the answer.
    answer_words = words(expected_answer(voice_env, QUESTION))
    played = ended["history_words"][1]
    assert 0 < played < len(answer_words)


# --- DTMF -----------------------------------------------------------------------------------------
def test_dtmf_zero_repeats_the_last_answer(start_web, voice_env) -> None:
    url = start_web(**voice_env)
    [call] = ConversationSimulator(url, [QUESTION, "dtmf:0"]).run()
    assert not call.errors, call.errors
    first, repeat = call.turns
    answer = expected_answer(voice_env, QUESTION)
    heard = transcribe_against(repeat.reply_audio, sentences(answer))
    assert words(heard) == words(answer)
    assert abs(repeat.reply_secs - first.reply_secs) < 0.5


# --- TRANSCRIPTION mode ---------------------------------------------------------------------------
def test_transcription_mode_answers_acs_text_in_speech(start_web, voice_env) -> None:
    url = start_web(**voice_env, ACS_STREAMING_MODE="TRANSCRIPTION")
    ws = websocket.create_connection(
        url.replace("http", "ws") + "/api/v1/media/stream",
        header=["x-ms-call-connection-id: transcription-call"],
        timeout=CLIENT_TIMEOUT_SECS,
    )
    try:
        ws.send('{"kind":"TranscriptionMetadata","transcriptionMetadata":{"locale":"en-US"}}')
        ws.send(protocol.inbound_transcription("what is the", final=False))
        ws.send(protocol.inbound_transcription(QUESTION, final=True))
        audio = bytearray()
        deadline = time.monotonic() + CLIENT_TIMEOUT_SECS
        ws.settimeout(2.0)
        while time.monotonic() < deadline:
            try:
                kind, pcm = protocol.outbound_kind(ws.recv())
            except websocket.WebSocketTimeoutException:
                if audio:
                    break
                continue
            assert kind == "AudioData"
            audio += pcm or b""
    finally:
        ws.close()
        ws.shutdown()
    answer = expected_answer(voice_env, QUESTION)
    assert words(transcribe_against(bytes(audio), sentences(answer))) == words(answer)


# --- bounds ---------------------------------------------------------------------------------------
def open_socket(url: str, call_id: str) -> websocket.WebSocket:
    return websocket.create_connection(
        url.replace("http", "ws") + "/api/v1/media/stream",
        header=[f"x-ms-call-connection-id: {call_id}"],
        timeout=CLIENT_TIMEOUT_SECS,
    )


def close_code(ws: websocket.WebSocket) -> tuple[int, str]:
    """Read until the server closes; its close code and reason. The socket is closed after.

    Frame by frame (``recv_frame``), not ``recv_data``: on a close frame that one answers with a
    close of its own, which fails with BrokenPipeError when the server has already shut the
    socket, as it does after refusing a flood."""
    try:
        while True:
            frame = ws.recv_frame()
            if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                return int.from_bytes(frame.data[:2], "big"), frame.data[2:].decode()
    finally:
        ws.shutdown()


def test_oversize_frame_flood_and_garbage_are_handled_cleanly(start_web, voice_env) -> None:
    url = start_web(**voice_env, MEDIA_MAX_FRAME_BYTES="4096", MEDIA_MAX_FRAMES_PER_SECOND="60")
    # Garbage and unknown kinds are counted, not fatal.
    ws = open_socket(url, "garbage")
    for message in ["not json", "[]", '{"kind": 5}', '{"kind":"Mystery","mystery":{}}',
                    '{"kind":"AudioData","audioData":{"data":"!!"}}']:  # fmt: skip
        ws.send(message)
    ws.send(protocol.inbound_audio(bytes(640)))
    wait_for(
        lambda: status(url)["calls"] and status(url)["calls"][0]["malformed"] >= 3, 30, "counts"
    )
    current = status(url)["calls"][0]
    assert current["unknown_kinds"] == {"Mystery": 1}
    ws.close()
    ws.shutdown()
    # One frame over the bound: closed with 1009.
    ws = open_socket(url, "oversize")
    ws.send("x" * 5000)
    assert close_code(ws)[0] == 1009
    # A flood: more frames in a second than the bound: closed with 1008 and a reason.
    ws = open_socket(url, "flood")
    try:
        for _ in range(1000):  # far over 60 a second, and over the 3 s burst allowance
            ws.send(protocol.inbound_audio(bytes(640)))
    except (websocket.WebSocketException, OSError):
        pass  # the server may close while we are still sending
    assert close_code(ws) == (1008, "too many frames per second")
    wait_for(lambda: status(url)["active_calls"] == 0, 30, "every call to end")
    assert status(url)["voice_threads"] == 0


def test_calls_over_the_process_limit_are_refused_with_1013(start_web, voice_env) -> None:
    url = start_web(**voice_env, MEDIA_MAX_CALLS="1")
    first = open_socket(url, "first")
    wait_for(lambda: status(url)["active_calls"] == 1, 30, "the first call")
    second = open_socket(url, "second")
    assert close_code(second) == (1013, "too many concurrent calls")
    first.close()
    first.shutdown()
    wait_for(lambda: status(url)["active_calls"] == 0, 30, "the first call to end")


# --- ACS's token, checked before the upgrade ------------------------------------------------------
@pytest.fixture(scope="module")
def acs_key():
    return new_rsa_key()


@pytest.fixture
def secured_url(start_web, voice_env, acs_key) -> Iterator[str]:
    with serve_jwks(acs_key, kid="acs") as jwks_url:
        yield start_web(
            **{**voice_env, "AUTH_DISABLED": "false"},
            AUTH_API_KEY="app-key",
            ACS_RESOURCE_ID=AUDIENCE,
            ACS_JWKS_URL=jwks_url,
        )


def upgrade(url: str, headers: dict[str, str]) -> httpx.Response:
    """A WebSocket upgrade request, without completing a handshake: the status says it all."""
    return httpx.get(
        f"{url}/api/v1/media/stream",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            **headers,
        },
        timeout=CLIENT_TIMEOUT_SECS,
    )


def test_acs_tokens_are_checked_before_the_upgrade(secured_url, acs_key) -> None:
    import jwt

    pem = private_pem(acs_key)
    other = private_pem(new_rsa_key())
    now = int(time.time())
    cases = {
        "missing": None,
        "other key": sign_token(other, AUDIENCE, kid="acs"),
        "audience": sign_token(pem, "another-resource", kid="acs"),
        "issuer": sign_token(pem, AUDIENCE, kid="acs", issuer="https://evil.example"),
        "expired": sign_token(pem, AUDIENCE, kid="acs", lifetime_secs=-120),
        "unknown kid": sign_token(pem, AUDIENCE, kid="nope"),
        "alg none": jwt.encode(
            {"iss": "https://acscallautomation.communication.azure.com", "aud": AUDIENCE,
             "exp": now + 60}, "", algorithm="none", headers={"kid": "acs"}),
        "garbage": "not.a.token",
    }  # fmt: skip
    for case, token in cases.items():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = upgrade(secured_url, headers)
        assert response.status_code == 401, case
        assert response.json()["detail"], case
    # The app's own API key is not ACS's token.
    assert upgrade(secured_url, {"X-API-Key": "app-key"}).status_code == 401
    # No call was ever admitted.
    report = httpx.get(
        f"{secured_url}/api/v1/media/status", headers={"X-API-Key": "app-key"}, timeout=30
    ).json()
    assert report["recent_calls"] == [] and report["active_calls"] == 0
    # The status page itself needs the app credential.
    assert httpx.get(f"{secured_url}/api/v1/media/status", timeout=30).status_code == 401


def test_a_valid_acs_token_opens_the_socket_and_the_call_is_answered(secured_url, acs_key) -> None:
    pem = private_pem(acs_key)
    simulator = ConversationSimulator(
        secured_url, [QUESTION], token_factory=lambda: sign_token(pem, AUDIENCE, kid="acs")
    )
    summary = summarize(simulator.run())
    assert summary["errors"] == [] and summary["answered"] == 1


def test_the_simulator_command_line_places_a_call(start_web, voice_env, conduit_env) -> None:
    import json
    import subprocess
    import sys

    url = start_web(**voice_env)
    done = subprocess.run(
        [sys.executable, "-m", "voice.simulate", "--url", url, "--json", QUESTION],
        env=conduit_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    *turns, summary = [json.loads(line) for line in done.stdout.splitlines()]
    assert [turn["phrase"] for turn in turns] == [QUESTION]
    assert summary["answered"] == 1 and summary["errors"] == []


def test_a_call_without_usable_engines_is_closed_with_the_reason(start_web, voice_env) -> None:
    url = start_web(**voice_env, VOICE_ENGINE="azure")  # no AZURE_SPEECH_* set
    ws = open_socket(url, "no-engines")
    assert close_code(ws) == (1011, "speech engines unavailable")
    wait_for(lambda: status(url)["active_calls"] == 0, 30, "the call to end")
