"""The telephone network's side of a call: ring, answer, callbacks, media, hang-up, report.

:class:`Network` holds every call the emulator knows and drives each through ACS's lifecycle:

1. ``place_call`` rings Conduit: an Event Grid ``IncomingCall`` POSTed to its route (optionally
   delivered more than once, as Event Grid may);
2. ``answer`` (the SDK's ``answer_call``) or ``create`` (``create_call``) connects it: the
   callbacks ``CallConnected`` and ``ParticipantsUpdated`` are posted, each with a fresh ACS JWT;
3. with media streaming on, ``MediaStreamingStarted`` is posted and the media WebSocket opened to
   the transport URL, where :class:`~emulators.acs.caller.ScriptedCaller` plays the caller;
4. whoever hangs up, ``CallDisconnected`` is posted and the call report written.

Times are taken where ACS would see them: answer latency is from ringing to the media socket
being open.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from emulators.acs.caller import CallReport, CallScript, ScriptedCaller
from emulators.acs.tokens import TokenIssuer

log = logging.getLogger("conduit.emulators.acs")

# Calls kept for the control API and reports; the oldest finished ones go first.
MAX_CALLS = 1000
# Conduit answers Event Grid within Event Grid's 30 s, and its callbacks within seconds.
HTTP_TIMEOUT_SECS = 30.0
# How long place_call(wait=True) waits for a whole call.
CALL_WAIT_SECS = 300.0
# The callee of a call Conduit places says this, then listens.
DEFAULT_CALLEE_SCRIPT = CallScript(utterances=["hello"])
AUDIO_FORMAT_RATES = {"pcm16kmono": 16000, "pcm24kmono": 24000}


class CallNotFound(LookupError):
    pass


class CallStateError(RuntimeError):
    """The request does not fit the call's state (answering twice, a finished call ...)."""


@dataclass
class EmulatedCall:
    call_id: str
    direction: str  # "inbound": we rang Conduit; "outbound": Conduit called out through us
    caller: str
    target: str
    script: CallScript
    server_call_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    correlation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    incoming_call_context: str = field(default_factory=lambda: uuid.uuid4().hex + uuid.uuid4().hex)
    state: str = "ringing"
    callback_uri: str = ""
    operation_context: str | None = None
    media: dict[str, Any] | None = None
    transcription: dict[str, Any] | None = None
    answer_requests: int = 0
    callbacks_posted: list[str] = field(default_factory=list)
    callback_failures: int = 0
    delivery_errors: list[str] = field(default_factory=list)
    rang_at: float = field(default_factory=time.monotonic)
    media_open_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    report: CallReport | None = None
    ended: threading.Event = field(default_factory=threading.Event)
    _caller: ScriptedCaller | None = None

    def properties(self, endpoint_source: str) -> dict[str, Any]:
        """The call connection as the REST API returns it (CallConnectionPropertiesInternal)."""
        return {
            "callConnectionId": self.call_id,
            "serverCallId": self.server_call_id,
            "targets": [_identifier(self.target)],
            "callConnectionState": self.state if self.state != "ringing" else "connecting",
            "callbackUri": self.callback_uri,
            "source": _identifier(self.caller if self.direction == "inbound" else endpoint_source),
            "correlationId": self.correlation_id,
            "answeredBy": _identifier(endpoint_source),
        }

    def summary(self) -> dict[str, Any]:
        answer_ms = (
            round((self.media_open_at - self.rang_at) * 1000, 1) if self.media_open_at else None
        )
        return {
            "call_id": self.call_id,
            "direction": self.direction,
            "caller": self.caller,
            "target": self.target,
            "state": self.state,
            "answer_requests": self.answer_requests,
            "answer_to_media_ms": answer_ms,
            "callbacks_posted": list(self.callbacks_posted),
            "callback_failures": self.callback_failures,
            "delivery_errors": list(self.delivery_errors),
            "media": self.media,
            "transcription": self.transcription,
            "error": self.error,
            "report": self.report.to_json() if self.report else None,
        }


def _identifier(raw_id: str) -> dict[str, Any]:
    """A CommunicationIdentifier in the REST shape: phone numbers are ``4:+E164``."""
    if raw_id.startswith("+"):
        raw_id = f"4:{raw_id}"
    if raw_id.startswith("4:"):
        return {"kind": "phoneNumber", "rawId": raw_id, "phoneNumber": {"value": raw_id[2:]}}
    return {"kind": "communicationUser", "rawId": raw_id, "communicationUser": {"id": raw_id}}


class Network:
    """Every call the emulator knows, and the threads that play them."""

    def __init__(
        self,
        issuer: TokenIssuer,
        reports_dir: Path,
        source_id: str,
        *,
        transcribe: Callable[[np.ndarray], str] | None = None,
        target_url: str | None = None,
        target_api_key: str | None = None,
    ) -> None:
        self.issuer, self.reports_dir, self.source_id = issuer, reports_dir, source_id
        self.transcribe, self.target_url, self.target_api_key = (
            transcribe,
            target_url,
            target_api_key,
        )
        self._calls: OrderedDict[str, EmulatedCall] = OrderedDict()
        self._by_context: dict[str, str] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._http = httpx.Client(timeout=HTTP_TIMEOUT_SECS)

    # --- the control API -------------------------------------------------------------------------
    def place_call(
        self,
        script: CallScript,
        *,
        caller: str = "+15550100",
        target: str = "+15550199",
        target_url: str | None = None,
        deliveries: int = 1,
        target_api_key: str | None = None,
    ) -> EmulatedCall:
        """Ring Conduit with an IncomingCall event; the rest happens when it answers."""
        url = target_url or self.target_url
        if not url:
            raise CallStateError(
                "No Event Grid URL to ring: set ACS_EMULATOR_TARGET_URL or pass 'target_url'."
            )
        call = self._add(EmulatedCall(uuid.uuid4().hex, "inbound", caller, target, script))
        key = target_api_key or self.target_api_key
        self._start(f"acs-ring-{call.call_id[:8]}", self._ring, call, url, max(1, deliveries), key)
        return call

    def get(self, call_id: str) -> EmulatedCall:
        with self._lock:
            call = self._calls.get(call_id)
        if call is None:
            raise CallNotFound(call_id)
        return call

    def calls(self) -> list[EmulatedCall]:
        with self._lock:
            return list(self._calls.values())

    # --- the REST API the SDK calls --------------------------------------------------------------
    def answer(self, body: dict[str, Any]) -> EmulatedCall:
        context = body.get("incomingCallContext")
        with self._lock:
            call_id = self._by_context.get(context) if isinstance(context, str) else None
            call = self._calls.get(call_id) if call_id else None
            if call is None:
                raise CallNotFound("incomingCallContext is unknown or expired")
            call.answer_requests += 1
            if call.state != "ringing":
                raise CallStateError(f"call {call.call_id} was already answered ({call.state})")
            call.state = "connecting"
        self._connect(call, body)
        return call

    def reject(self, body: dict[str, Any]) -> EmulatedCall:
        context = body.get("incomingCallContext")
        with self._lock:
            call_id = self._by_context.get(context) if isinstance(context, str) else None
            call = self._calls.get(call_id) if call_id else None
            if call is None:
                raise CallNotFound("incomingCallContext is unknown or expired")
            if call.state != "ringing":
                raise CallStateError(f"call {call.call_id} is no longer ringing ({call.state})")
            call.state = "rejected"
            call.error = f"rejected: {body.get('callRejectReason') or 'none'}"
        call.ended_at = time.monotonic()
        call.ended.set()
        return call

    def create(self, body: dict[str, Any]) -> EmulatedCall:
        targets = body.get("targets") or []
        if not targets or not isinstance(targets[0], dict) or not targets[0].get("rawId"):
            raise ValueError("targets[0].rawId is required")
        source = (body.get("sourceCallerIdNumber") or {}).get("value") or self.source_id
        call = EmulatedCall(
            uuid.uuid4().hex, "outbound", source, targets[0]["rawId"], DEFAULT_CALLEE_SCRIPT
        )
        call.state = "connecting"
        self._add(call)
        self._connect(call, body)
        return call

    def hang_up(self, call_id: str) -> None:
        call = self.get(call_id)
        self._end(call, "agent")

    def media_streaming(self, call_id: str, start: bool) -> None:
        call = self.get(call_id)
        if call.state != "connected" or call.media is None:
            raise CallStateError(f"call {call_id} has no media streaming configured")
        if start:
            self._post(
                call, "MediaStreamingStarted", self._media_update(call, "mediaStreamingStarted")
            )
            if call._caller is None:
                self._start(f"acs-media-{call_id[:8]}", self._stream, call)
        else:
            if call._caller is not None:
                call._caller.hang_up()
            self._post(
                call, "MediaStreamingStopped", self._media_update(call, "mediaStreamingStopped")
            )

    def transcription(self, call_id: str, start: bool) -> None:
        call = self.get(call_id)
        kind = "TranscriptionStarted" if start else "TranscriptionStopped"
        self._post(call, kind, {"transcriptionUpdate": {"transcriptionStatus": kind[13:].lower()}})

    def play(self, call_id: str, body: dict[str, Any]) -> None:
        call = self.get(call_id)
        if call.state != "connected":
            raise CallStateError(f"call {call_id} is not connected")
        operation = {"operationContext": body.get("operationContext")}
        self._start(f"acs-play-{call_id[:8]}", self._played, call, operation)

    def _played(self, call: EmulatedCall, operation: dict[str, Any]) -> None:
        # The emulator has no audio to play into the call; it reports the operation as done.
        self._post(call, "PlayStarted", dict(operation))
        self._post(call, "PlayCompleted", dict(operation))

    def close(self) -> None:
        for call in self.calls():
            if call._caller is not None:
                call._caller.hang_up()
        for thread in list(self._threads):
            thread.join(timeout=HTTP_TIMEOUT_SECS)
        self._http.close()

    # --- the lifecycle ---------------------------------------------------------------------------
    def _add(self, call: EmulatedCall) -> EmulatedCall:
        with self._lock:
            self._calls[call.call_id] = call
            self._by_context[call.incoming_call_context] = call.call_id
            while len(self._calls) > MAX_CALLS:
                oldest = next(iter(self._calls.values()))
                if not oldest.ended.is_set():
                    break
                del self._calls[oldest.call_id]
                self._by_context.pop(oldest.incoming_call_context, None)
        return call

    def _start(self, name: str, target: Callable[..., Any], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _ring(self, call: EmulatedCall, url: str, deliveries: int, api_key: str | None) -> None:
        event = self._incoming_call_event(call)
        headers = {"aeg-event-type": "Notification"}
        if api_key:
            # As an Event Grid subscription's delivery header carries it.
            headers["X-API-Key"] = api_key
        for _ in range(deliveries):
            try:
                response = self._http.post(url, json=[event], headers=headers)
                problem = (
                    None
                    if response.status_code == 200
                    else (f"Event Grid delivery got {response.status_code}: {response.text[:200]}")
                )
            except httpx.HTTPError as error:
                problem = f"Event Grid delivery failed: {error}"
            if problem:
                call.delivery_errors.append(problem)
                if call.state == "ringing":
                    self._fail(call, problem)
                    return
        # Nobody answered: ACS gives up on an unanswered call after about 30 s.
        if call.state == "ringing" and not call.ended.wait(HTTP_TIMEOUT_SECS):
            with self._lock:
                unanswered = call.state == "ringing"
            if unanswered:
                self._fail(call, "not answered")

    def _connect(self, call: EmulatedCall, body: dict[str, Any]) -> None:
        call.callback_uri = str(body.get("callbackUri") or "")
        call.operation_context = body.get("operationContext")
        call.media = body.get("mediaStreamingOptions")
        call.transcription = body.get("transcriptionOptions")
        self._start(f"acs-call-{call.call_id[:8]}", self._run, call)

    def _run(self, call: EmulatedCall) -> None:
        with self._lock:
            if call.state != "connecting":
                return  # hung up before it connected
            call.state = "connected"
        self._post(call, "CallConnected", {})
        self._post(
            call,
            "ParticipantsUpdated",
            {"participants": [{"identifier": _identifier(call.caller), "isMuted": False}]},
        )
        media = call.media or {}
        if media.get("startMediaStreaming", True) and media.get("transportUrl"):
            self._post(
                call, "MediaStreamingStarted", self._media_update(call, "mediaStreamingStarted")
            )
            self._stream(call)
            if call.state == "connected":
                self._end(call, call.report.hung_up_by if call.report else "caller")
        elif call.transcription and call.transcription.get("transportUrl"):
            self._post(
                call,
                "TranscriptionStarted",
                {"transcriptionUpdate": {"transcriptionStatus": "started"}},
            )
            self._stream(call)
            if call.state == "connected":
                self._end(call, call.report.hung_up_by if call.report else "caller")

    def _stream(self, call: EmulatedCall) -> None:
        """Play the caller on the media (or, in TRANSCRIPTION mode, transcription) socket."""
        media = call.media or {}
        transcription = call.transcription if not media else None
        rate = AUDIO_FORMAT_RATES.get(str(media.get("audioFormat", "pcm16KMono")).lower(), 16000)
        caller = ScriptedCaller(
            call.call_id,
            str((transcription or media)["transportUrl"]),
            token=self.issuer.token(),
            sample_rate=rate,
            script=call.script,
            transcribe=self.transcribe if call.script.transcribe else None,
            on_open=lambda: setattr(call, "media_open_at", time.monotonic()),
            transcription_locale=str(transcription.get("locale") or "en-US")
            if transcription
            else None,
        )
        call._caller = caller
        if call.state != "connected":
            return  # hung up while the socket was being set up
        call.report = caller.run()
        self._write_report(call)

    def _end(self, call: EmulatedCall, by: str) -> None:
        with self._lock:
            if call.state in ("disconnected", "failed"):
                return
            call.state = "disconnected"
        if call._caller is not None:
            call._caller.hang_up()
        call.ended_at = time.monotonic()
        self._post(
            call, "CallDisconnected", {"resultInformation": _result(200, f"hung up by {by}")}
        )
        if call.report is not None:
            self._write_report(call)  # again, now with the final state
        call.ended.set()

    def _fail(self, call: EmulatedCall, error: str) -> None:
        log.warning("call %s failed: %s", call.call_id, error)
        with self._lock:
            call.state, call.error = "failed", error
        call.ended_at = time.monotonic()
        call.ended.set()

    # --- callbacks -------------------------------------------------------------------------------
    def _post(self, call: EmulatedCall, kind: str, data: dict[str, Any]) -> None:
        if not call.callback_uri:
            return
        event = {
            "id": str(uuid.uuid4()),
            "source": f"calling/callConnections/{call.call_id}",
            "type": f"Microsoft.Communication.{kind}",
            "specversion": "1.0",
            "datacontenttype": "application/json",
            "time": datetime.now(UTC).isoformat(),
            "subject": f"calling/callConnections/{call.call_id}",
            "data": {
                "callConnectionId": call.call_id,
                "serverCallId": call.server_call_id,
                "correlationId": call.correlation_id,
                "operationContext": data.pop("operationContext", call.operation_context),
                "resultInformation": _result(200, kind),
                **data,
            },
        }
        headers = {"Authorization": f"Bearer {self.issuer.token()}"}
        try:
            response = self._http.post(call.callback_uri, json=[event], headers=headers)
            ok = response.status_code < 300
        except httpx.HTTPError:
            ok = False
        call.callbacks_posted.append(kind)
        if not ok:
            call.callback_failures += 1

    def _media_update(self, call: EmulatedCall, status: str) -> dict[str, Any]:
        return {"mediaStreamingUpdate": {"contentType": "Audio", "mediaStreamingStatus": status}}

    def _incoming_call_event(self, call: EmulatedCall) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "topic": "/subscriptions/emulator/resourceGroups/emulator/providers/"
            "Microsoft.Communication/communicationServices/acs-emulator",
            "subject": f"/caller/{_identifier(call.caller)['rawId']}/recipient/"
            f"{_identifier(call.target)['rawId']}",
            "eventType": "Microsoft.Communication.IncomingCall",
            "eventTime": datetime.now(UTC).isoformat(),
            "dataVersion": "1.0",
            "metadataVersion": "1",
            "data": {
                "to": _identifier(call.target),
                "from": _identifier(call.caller),
                "serverCallId": call.server_call_id,
                "callerDisplayName": "",
                "customContext": {"sipHeaders": {}, "voipHeaders": {}},
                "incomingCallContext": call.incoming_call_context,
                "correlationId": call.correlation_id,
            },
        }

    def _write_report(self, call: EmulatedCall) -> None:
        self.reports_dir.mkdir(parents=True, exist_ok=True)
        path = self.reports_dir / f"{call.call_id}.json"
        path.write_text(json.dumps(call.summary(), indent=2))


def _result(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "subCode": 0, "message": message}
