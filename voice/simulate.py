"""ConversationSimulator (the older name): callers on ACS-shaped media sockets, for load tests,
benchmarks, demos and the end-to-end tests.

Each simulated call opens ``/api/v1/media/stream`` as ACS does (``x-ms-call-connection-id``, a
bearer JWT when given a signing key), sends ``AudioMetadata``, then streams audio in real time:
20 ms frames, each sent when it has "been captured", silence between phrases as ACS streams it.
Phrases are spoken with espeak-ng, so the simulator knows to the frame when each one ends. It
listens to what the agent sends back like a phone would, and reports per turn:

- ``eou_to_first_audio_ms``: end of the caller's phrase → the first AudioData frame of the answer;
- ``barge_in_ms`` (with ``barge_in``): the caller starts talking over the answer → StopAudio;
  ``stale_frames`` counts answer frames that still arrived after the StopAudio;
- ``underruns``: gaps over 40 ms in the answer's playback (a playback clock fed by arrivals);
- the answer's audio, for transcription.

    python -m voice.simulate --url http://127.0.0.1:8000 --calls 10 \\
        "what is the weather today" "thank you very much"

Sign tokens as ACS would with ``--jwt-key private.pem --audience <ACS resource id>`` (the
server must trust the matching public key: ``ACS_JWKS_URL``).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import jwt
import websocket

from settings.voice import ACS_ISSUER
from voice.audio import split_frames
from voice.engines.local import LocalSynthesizer
from voice.frames import FRAME_MS, frame_bytes
from voice.latency import percentile
from voice.protocol import inbound_audio, inbound_audio_metadata, inbound_dtmf, outbound_kind

FRAME_SECS = FRAME_MS / 1000
# Silence streamed before the first phrase, as a caller takes a moment after the call connects.
LEAD_IN_SECS = 0.5
# No answer frame for this long ends the answer (longer than any gap a healthy agent leaves).
REPLY_END_SECS = 1.0
# An answer that has not started this long after the phrase ended is counted as missing.
REPLY_TIMEOUT_SECS = 15.0
# With barge-in, the caller talks over the answer once it has played this long.
BARGE_IN_AFTER_SECS = 0.6
UNDERRUN_SECS = 0.04
CONNECT_TIMEOUT_SECS = 30.0
TOKEN_LIFETIME_SECS = 300


def sign_token(
    private_key_pem: str | bytes,
    audience: str,
    *,
    kid: str = "acs",
    issuer: str = ACS_ISSUER,
    lifetime_secs: int = TOKEN_LIFETIME_SECS,
) -> str:
    """An RS256 token shaped as ACS's media-socket tokens (for tests and emulated calls)."""
    now = int(time.time())
    claims = {"iss": issuer, "aud": audience, "iat": now, "nbf": now, "exp": now + lifetime_secs}
    return jwt.encode(claims, private_key_pem, algorithm="RS256", headers={"kid": kid})


@dataclass
class TurnResult:
    phrase: str
    eou_to_first_audio_ms: float | None = None
    reply_secs: float = 0.0
    underruns: int = 0
    longest_gap_ms: float = 0.0  # the longest silence inside the answer, as played
    barge_in_ms: float | None = None
    stale_frames: int = 0
    reply_audio: bytes = field(default=b"", repr=False)


@dataclass
class CallResult:
    call_id: str
    turns: list[TurnResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""


class _Listener:
    """The receiving half of one call: every agent message with its arrival time."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self.events: list[tuple[float, str, bytes | None]] = []
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self.thread = threading.Thread(target=self._run, name="simulator-listener", daemon=True)

    def _run(self) -> None:
        try:
            while True:
                opcode, data = self.ws.recv_data(control_frame=True)
                now = time.monotonic()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    if len(data) >= 2:
                        self.close_code = int.from_bytes(data[:2], "big")
                        self.close_reason = data[2:].decode(errors="replace")
                    return
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    kind, pcm = outbound_kind(data)
                    with self.lock:
                        self.events.append((now, kind, pcm))
        except (websocket.WebSocketException, OSError):
            return
        finally:
            self.closed.set()

    def since(self, index: int) -> list[tuple[float, str, bytes | None]]:
        with self.lock:
            return self.events[index:]


class _Call:
    """One simulated caller: sends on its own thread, listens on another."""

    def __init__(self, simulator: ConversationSimulator, call_id: str) -> None:
        self.sim = simulator
        self.result = CallResult(call_id)
        self.frame_size = frame_bytes(simulator.sample_rate)
        self._clock = 0.0
        self._seen = 0  # events already assigned to a turn

    def run(self) -> CallResult:
        sim = self.sim
        headers = [f"x-ms-call-connection-id: {self.result.call_id}"]
        if sim.token_factory is not None:
            headers.append(f"Authorization: Bearer {sim.token_factory()}")
        try:
            ws = websocket.create_connection(
                sim.ws_url, header=headers, timeout=CONNECT_TIMEOUT_SECS
            )
        except (websocket.WebSocketException, OSError) as error:
            self.result.errors.append(f"connect: {error}")
            return self.result
        listener = _Listener(ws)
        listener.thread.start()
        try:
            self._converse(ws, listener)
        except (websocket.WebSocketException, OSError) as error:
            if not listener.closed.is_set():
                self.result.errors.append(f"send: {type(error).__name__}: {error}")
        finally:
            try:
                ws.close()
            except (websocket.WebSocketException, OSError):
                pass
            finally:
                ws.shutdown()  # the OS socket, even when the close handshake failed
            listener.thread.join(CONNECT_TIMEOUT_SECS)
            self.result.close_code = listener.close_code
            self.result.close_reason = listener.close_reason
        return self.result

    # --- sending at the caller's pace ----------------------------------------------------------
    def _send_frame(self, ws: websocket.WebSocket, pcm: bytes, silent: bool = False) -> float:
        """Send one frame when it has been captured (real time); returns its send time."""
        self._clock += FRAME_SECS
        delay = self._clock - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1.0:  # we fell far behind (a loaded machine): do not burst to catch up
            self._clock = time.monotonic()
        ws.send(inbound_audio(pcm, silent=silent))
        return time.monotonic()

    def _silence(self, ws: websocket.WebSocket, seconds: float) -> None:
        silence = bytes(self.frame_size)
        for _ in range(round(seconds / FRAME_SECS)):
            self._send_frame(ws, silence, silent=True)

    def _speak(self, ws: websocket.WebSocket, phrase: str) -> float:
        """Stream the phrase; when its last frame left (the end of the caller's speech)."""
        ended = time.monotonic()
        for pcm in split_frames(self.sim.speech(phrase), self.frame_size):
            ended = self._send_frame(ws, pcm)
        return ended

    def _converse(self, ws: websocket.WebSocket, listener: _Listener) -> None:
        sim = self.sim
        ws.send(inbound_audio_metadata(sim.sample_rate, subscription_id=str(uuid.uuid4())))
        self._clock = time.monotonic()
        self._silence(ws, LEAD_IN_SECS)
        for index, phrase in enumerate(sim.phrases):
            if listener.closed.is_set():
                self.result.errors.append(f"closed by the agent ({listener.close_code})")
                return
            if phrase.startswith("dtmf:"):
                ws.send(inbound_dtmf(phrase.removeprefix("dtmf:")))
                turn = TurnResult(phrase)
                ended = time.monotonic()
            else:
                turn = TurnResult(phrase)
                ended = self._speak(ws, phrase)
            self.result.turns.append(turn)
            barge = sim.barge_in and index < len(sim.phrases) - 1
            self._await_reply(
                ws, listener, turn, ended, barge_with=sim.phrases[index + 1] if barge else None
            )
            if barge:
                return self._finish_after_barge(ws, listener, index + 1)
            self._silence(ws, sim.pause_secs)
        return None

    def _finish_after_barge(self, ws: websocket.WebSocket, listener: _Listener, index: int) -> None:
        # The barge-in phrase was the next turn; the rest of the script goes on normally.
        for phrase in self.sim.phrases[index + 1 :]:
            turn = TurnResult(phrase)
            self.result.turns.append(turn)
            self._await_reply(ws, listener, turn, self._speak(ws, phrase), barge_with=None)
            self._silence(ws, self.sim.pause_secs)

    def _await_reply(
        self,
        ws: websocket.WebSocket,
        listener: _Listener,
        turn: TurnResult,
        ended: float,
        barge_with: str | None,
    ) -> None:
        """Stream silence (or the barge-in phrase) while the answer plays; then score it."""
        start_index = len(listener.events)
        first_audio: float | None = None
        last_audio = ended
        playhead = 0.0
        audio: list[bytes] = []
        deadline = ended + REPLY_TIMEOUT_SECS
        silence = bytes(self.frame_size)
        while not listener.closed.is_set():
            for at, kind, pcm in listener.since(start_index):
                start_index += 1
                if kind != "AudioData" or pcm is None:
                    continue
                if first_audio is None:
                    first_audio = at
                    turn.eou_to_first_audio_ms = round((at - ended) * 1000, 1)
                else:
                    gap = at - playhead
                    turn.longest_gap_ms = max(turn.longest_gap_ms, round(gap * 1000, 1))
                    if gap > UNDERRUN_SECS:
                        turn.underruns += 1
                playhead = max(playhead, at) + len(pcm) / (2 * self.sim.sample_rate)
                last_audio = at
                audio.append(pcm)
            now = time.monotonic()
            if (
                barge_with is not None
                and first_audio is not None
                and now - first_audio >= BARGE_IN_AFTER_SECS
            ):
                turn.reply_audio = b"".join(audio)
                turn.reply_secs = len(turn.reply_audio) / (2 * self.sim.sample_rate)
                return self._barge_in(ws, listener, turn, barge_with, start_index)
            if first_audio is None and now > deadline:
                self.result.errors.append(f"no answer to {turn.phrase!r}")
                break
            if first_audio is not None and now - last_audio >= REPLY_END_SECS:
                break
            self._send_frame(ws, silence, silent=True)
        turn.reply_audio = b"".join(audio)
        turn.reply_secs = len(turn.reply_audio) / (2 * self.sim.sample_rate)
        return None

    def _barge_in(
        self,
        ws: websocket.WebSocket,
        listener: _Listener,
        turn: TurnResult,
        phrase: str,
        start_index: int,
    ) -> None:
        """Talk over the answer: time to StopAudio, and answer frames that came after it."""
        onset = self._clock  # the first barge-in frame starts where the last one ended
        next_turn = TurnResult(phrase)
        self.result.turns.append(next_turn)
        ended = self._speak(ws, phrase)
        stop_at: float | None = None
        for at, kind, _pcm in listener.since(start_index):
            if kind == "StopAudio" and stop_at is None:
                stop_at = at
                turn.barge_in_ms = round((at - onset) * 1000, 1)
            elif kind == "AudioData" and stop_at is not None and at <= ended:
                turn.stale_frames += 1
        if stop_at is None:
            self.result.errors.append(f"no StopAudio after barging in on {turn.phrase!r}")
        self._await_reply(ws, listener, next_turn, ended, barge_with=None)


class ConversationSimulator:
    """Runs ``calls`` concurrent simulated calls, each speaking ``phrases`` in order.

    A phrase ``dtmf:<digit>`` sends a DTMF tone instead of speech.
    """

    def __init__(
        self,
        url: str,
        phrases: list[str],
        *,
        calls: int = 1,
        sample_rate: int = 16000,
        token_factory: Any = None,
        barge_in: bool = False,
        voice: str = "en-us",
        pause_secs: float = 0.5,
    ) -> None:
        base = url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        self.ws_url = base if base.endswith("/stream") else f"{base}/api/v1/media/stream"
        self.phrases = phrases
        self.calls = calls
        self.sample_rate = sample_rate
        self.token_factory = token_factory
        self.barge_in = barge_in
        self.pause_secs = pause_secs
        self.voice = voice
        self._synthesizer = LocalSynthesizer(voice)
        self._speech: dict[str, bytes] = {}
        for phrase in phrases:  # rendered before the calls start: the caller's CPU is not timed
            self.speech(phrase)

    def speech(self, phrase: str) -> bytes:
        if phrase not in self._speech:
            self._speech[phrase] = b"".join(self._synthesizer.synthesize(phrase, self.sample_rate))
        return self._speech[phrase]

    def run(self, processes: int = 1) -> list[CallResult]:
        """Place the calls; with ``processes`` > 1 they are spread over that many processes, so
        the callers' own Python (one GIL) does not delay what they hear on a busy machine.
        ``token_factory`` must then be picklable (a module-level function, a partial)."""
        if processes > 1 and self.calls > 1:
            return self._run_in_processes(min(processes, self.calls))
        return self._run_here()

    def _run_in_processes(self, processes: int) -> list[CallResult]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        shares = [self.calls // processes + (i < self.calls % processes) for i in range(processes)]
        options = {
            "url": self.ws_url,
            "phrases": self.phrases,
            "sample_rate": self.sample_rate,
            "token_factory": self.token_factory,
            "barge_in": self.barge_in,
            "voice": self.voice,
            "pause_secs": self.pause_secs,
        }
        # spawn: a forked child would inherit this process's threads' locks.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(processes, mp_context=context) as pool:
            futures = [pool.submit(_simulate, share, options) for share in shares]
            return [result for future in futures for result in future.result()]

    def _run_here(self) -> list[CallResult]:
        results: list[CallResult | None] = [None] * self.calls

        def call(index: int) -> None:
            results[index] = _Call(self, f"sim-{uuid.uuid4()}").run()

        threads = [
            threading.Thread(target=call, args=(i,), name=f"simulator-call-{i}")
            for i in range(self.calls)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return [result for result in results if result is not None]


def _simulate(calls: int, options: dict[str, Any]) -> list[CallResult]:
    """One process's share of the calls (ConversationSimulator.run with processes > 1)."""
    url = options.pop("url")
    phrases = options.pop("phrases")
    return ConversationSimulator(url, phrases, calls=calls, **options).run()


def summarize(results: list[CallResult]) -> dict[str, Any]:
    """p50/p95 over every turn of every call, and the totals."""
    turns = [turn for result in results for turn in result.turns]
    eou = [t.eou_to_first_audio_ms for t in turns if t.eou_to_first_audio_ms is not None]
    barge = [t.barge_in_ms for t in turns if t.barge_in_ms is not None]
    return {
        "calls": len(results),
        "turns": len(turns),
        "answered": len(eou),
        "eou_to_first_audio_p50_ms": percentile(eou, 0.5),
        "eou_to_first_audio_p95_ms": percentile(eou, 0.95),
        "barge_in_p50_ms": percentile(barge, 0.5),
        "barge_in_p95_ms": percentile(barge, 0.95),
        "underruns": sum(t.underruns for t in turns),
        "longest_gap_ms": max((t.longest_gap_ms for t in turns), default=0.0),
        "stale_frames": sum(t.stale_frames for t in turns),
        "errors": [error for result in results for error in result.errors],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m voice.simulate", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "phrases", nargs="*", default=["what is the weather today", "thank you very much"]
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--sample-rate", type=int, choices=(16000, 24000), default=16000)
    parser.add_argument("--barge-in", action="store_true", help="talk over the first answer")
    parser.add_argument("--jwt-key", help="PEM private key to sign ACS-shaped tokens with")
    parser.add_argument("--audience", help="the token audience (the server's ACS_RESOURCE_ID)")
    parser.add_argument("--kid", default="acs", help="key id the server's JWKS publishes")
    parser.add_argument("--json", action="store_true", help="print every turn as JSON")
    parser.add_argument(
        "--processes", type=int, default=1, help="spread the calls over this many processes"
    )
    args = parser.parse_args(argv)
    token_factory = None
    if args.jwt_key:
        if not args.audience:
            parser.error("--jwt-key needs --audience (the server's ACS_RESOURCE_ID)")
        with open(args.jwt_key, "rb") as file:
            key = file.read()
        token_factory = functools.partial(sign_token, key, args.audience, kid=args.kid)
    simulator = ConversationSimulator(
        args.url,
        args.phrases,
        calls=args.calls,
        sample_rate=args.sample_rate,
        token_factory=token_factory,
        barge_in=args.barge_in,
    )
    results = simulator.run(args.processes)
    if args.json:
        for result in results:
            for turn in result.turns:
                record = {k: v for k, v in asdict(turn).items() if k != "reply_audio"}
                print(json.dumps({"call_id": result.call_id, **record}))
    summary = summarize(results)
    print(json.dumps(summary))
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
