"""Call control: Event Grid and Call Automation callbacks → answered calls and call state.

No Flask here; web/calls.py maps HTTP to :class:`CallControl`:

- :meth:`CallControl.on_event_grid`: answers Event Grid's ``SubscriptionValidationEvent``
  handshake, and answers each ``IncomingCall`` with the real Call Automation SDK
  (``answer_call`` with :class:`MediaStreamingOptions` or, in TRANSCRIPTION mode,
  :class:`TranscriptionOptions`, both built from settings), after the caller allow/deny lists.
  An event id is remembered in Redis (``EVENTGRID_DEDUP_SECONDS``), so a redelivered event is
  answered once, whichever replica receives it.
- :meth:`CallControl.on_callbacks`: checks the ACS JWT, then moves the call's state for each
  CloudEvent (connected, media streaming, play, transcription, DTMF, disconnected ...) and tells
  the dashboard; unknown event types are logged and ignored.
- :meth:`CallControl.initiate` (``create_call``) and :meth:`CallControl.hang_up`.

Each call's state is a Redis hash ``call:{call_id}`` (and the set of active calls a sorted set),
each call has a session (``call_session_map:{call_id}``, :mod:`voice.sessions`), so any replica
answers for any call. Dashboard events go out through :class:`voice.connections.ConnectionManager`
on the ``calls`` topic and the call's session.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis
from azure.communication.callautomation import (
    AudioFormat,
    CallAutomationClient,
    CommunicationUserIdentifier,
    MediaStreamingAudioChannelType,
    MediaStreamingContentType,
    MediaStreamingOptions,
    PhoneNumberIdentifier,
    StreamingTransportType,
    TranscriptionOptions,
)
from azure.core.exceptions import HttpResponseError, ServiceRequestError

from settings import Settings, get_logger
from voice.acs_auth import AcsAuthError
from voice.connections import ConnectionManager
from voice.sessions import MemoManager, map_call_to_session, session_for_call

log = get_logger(__name__)

VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
INCOMING_CALL_EVENT = "Microsoft.Communication.IncomingCall"
EVENT_PREFIX = "Microsoft.Communication."
CALLS_TOPIC = "calls"
CALLBACKS_PATH = "/api/v1/calls/callbacks"
MEDIA_PATH = "/api/v1/media/stream"
SEEN_PREFIX = "eventgrid:seen:"
CALL_PREFIX = "call:"
ACTIVE_CALLS = "calls:active"
# More events than this in one delivery is not Event Grid (it batches at most 5,000 for custom
# batching, ACS sends one) nor ACS; refuse instead of working through it.
MAX_EVENTS_PER_DELIVERY = 100
# Tones a call remembers (a PIN, a menu choice): enough for any IVR, bounded.
MAX_DTMF_TONES = 64

# Callback types → (state field, value). Anything else is logged once and ignored.
CALLBACK_STATES: dict[str, tuple[str, str]] = {
    "CallConnected": ("state", "connected"),
    "CallDisconnected": ("state", "disconnected"),
    "CreateCallFailed": ("state", "failed"),
    "AnswerCallFailed": ("state", "failed"),
    "MediaStreamingStarted": ("media", "started"),
    "MediaStreamingStopped": ("media", "stopped"),
    "MediaStreamingFailed": ("media", "failed"),
    "PlayStarted": ("play", "playing"),
    "PlayCompleted": ("play", "completed"),
    "PlayFailed": ("play", "failed"),
    "PlayCanceled": ("play", "canceled"),
    "TranscriptionStarted": ("transcription", "started"),
    "TranscriptionStopped": ("transcription", "stopped"),
    "TranscriptionFailed": ("transcription", "failed"),
    "TranscriptionUpdated": ("transcription", "updated"),
}
# Handled with their own logic below (not a single state field).
OTHER_CALLBACKS = frozenset({"ParticipantsUpdated", "ContinuousDtmfRecognitionToneReceived"})


class CallControlError(ValueError):
    """A request that cannot be acted on; the message is safe to return and names the field."""


class CallAuthError(Exception):
    """A callback without a valid ACS token."""


@dataclass
class EventGridAnswer:
    status: int
    body: dict[str, Any]


def caller_id(source: Any) -> str:
    """The caller's id as the allow/deny lists name it: the E.164 number for a phone, else the
    raw id."""
    if not isinstance(source, dict):
        return ""
    if source.get("kind") == "phoneNumber":
        number = (source.get("phoneNumber") or {}).get("value")
        if isinstance(number, str) and number:
            return number
    raw = source.get("rawId")
    return raw if isinstance(raw, str) else ""


def caller_allowed(caller: str, allowed: list[str], denied: list[str]) -> bool:
    if caller in denied:
        return False
    return not allowed or caller in allowed


def public_base_url(settings: Settings) -> str:
    return (
        settings.calls_public_base_url or f"http://{settings.web_host}:{settings.web_port}"
    ).rstrip("/")


def media_transport_url(settings: Settings, session_id: str) -> str:
    base = public_base_url(settings)
    scheme, _, rest = base.partition("://")
    ws_scheme = "wss" if scheme == "https" else "ws"
    return f"{ws_scheme}://{rest}{MEDIA_PATH}?session_id={session_id}"


def streaming_options(
    settings: Settings, session_id: str
) -> tuple[MediaStreamingOptions | None, TranscriptionOptions | None]:
    """What ``answer_call``/``create_call`` asks ACS to stream, from ACS_STREAMING_MODE."""
    transport_url = media_transport_url(settings, session_id)
    if settings.acs_streaming_mode == "TRANSCRIPTION":
        return None, TranscriptionOptions(
            transport_url=transport_url,
            transport_type=StreamingTransportType.WEBSOCKET,
            locale=settings.acs_transcription_locale,
            start_transcription=True,
            enable_intermediate_results=True,
        )
    audio_format = (
        AudioFormat.PCM24_K_MONO
        if settings.acs_audio_sample_rate == 24000
        else AudioFormat.PCM16_K_MONO
    )
    return (
        MediaStreamingOptions(
            transport_url=transport_url,
            transport_type=StreamingTransportType.WEBSOCKET,
            content_type=MediaStreamingContentType.AUDIO,
            audio_channel_type=MediaStreamingAudioChannelType.MIXED,
            start_media_streaming=True,
            enable_bidirectional=True,
            enable_dtmf_tones=True,
            audio_format=audio_format,
        ),
        None,
    )


def automation_client(settings: Settings) -> CallAutomationClient:
    """The real SDK client: a connection string (the emulator's when none is set) or Entra ID."""
    options: dict[str, Any] = {}
    if settings.acs_ca_bundle:
        options["connection_verify"] = settings.acs_ca_bundle
    elif settings.embedded_acs:
        # The emulator's own certificate; it makes it at start in ACS_EMULATOR_DIR.
        options["connection_verify"] = f"{settings.acs_emulator_dir}/tls-cert.pem"
    if settings.acs_connection_string is None and settings.acs_endpoint:
        from azure.identity import DefaultAzureCredential

        return CallAutomationClient(settings.acs_endpoint, DefaultAzureCredential(), **options)
    return CallAutomationClient.from_connection_string(settings.acs_connection(), **options)


class CallControl:
    """Answers, places and follows calls; state in Redis, live updates through ``connections``."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        connections: ConnectionManager,
        verify_token: Callable[[str | None], dict[str, Any]],
        automation: Callable[[], CallAutomationClient] | None = None,
    ) -> None:
        self.settings, self.redis, self.connections = settings, client, connections
        self._verify_token = verify_token
        self._automation_factory = automation or (lambda: automation_client(settings))
        self._automation: CallAutomationClient | None = None
        self._unknown_types_logged: set[str] = set()

    @property
    def automation(self) -> CallAutomationClient:
        if self._automation is None:
            self._automation = self._automation_factory()
        return self._automation

    # --- Event Grid ------------------------------------------------------------------------------
    def on_event_grid(self, events: Any) -> EventGridAnswer:
        events = _event_list(events)
        for event in events:
            if event.get("eventType") == VALIDATION_EVENT:
                code = (event.get("data") or {}).get("validationCode")
                if not isinstance(code, str) or not code:
                    raise CallControlError(
                        "data.validationCode is missing from the validation event"
                    )
                log.info("Event Grid subscription validated")
                return EventGridAnswer(200, {"validationResponse": code})
        answered = []
        for event in events:
            if event.get("eventType") != INCOMING_CALL_EVENT:
                continue
            outcome = self._incoming_call(event)
            if outcome.status >= 500:
                return outcome
            answered.append(outcome.body)
        return EventGridAnswer(200, {"calls": answered})

    def _incoming_call(self, event: dict[str, Any]) -> EventGridAnswer:
        event_id = event.get("id")
        data = event.get("data") or {}
        context = data.get("incomingCallContext")
        if not isinstance(event_id, str) or not event_id or not isinstance(context, str):
            raise CallControlError("an IncomingCall event needs 'id' and data.incomingCallContext")
        seen_key = SEEN_PREFIX + event_id
        if not self.redis.set(seen_key, "1", nx=True, ex=self.settings.eventgrid_dedup_s):
            log.info("IncomingCall event delivered again; already handled")
            return EventGridAnswer(200, {"event": event_id, "outcome": "duplicate"})
        caller = caller_id(data.get("from"))
        if not caller_allowed(
            caller, self.settings.calls_allowed_callers, self.settings.calls_denied_callers
        ):
            log.info("call refused by the caller lists (CALLS_ALLOWED/DENIED_CALLERS)")
            try:
                self.automation.reject_call(context, call_reject_reason="forbidden")
            except HttpResponseError as error:
                log.warning("rejecting the call failed: %s", error.message)
            self._publish(None, {"type": "call", "event": "rejected", "caller": caller})
            return EventGridAnswer(200, {"event": event_id, "outcome": "rejected"})
        session_id = uuid.uuid4().hex
        media, transcription = streaming_options(self.settings, session_id)
        try:
            properties = self.automation.answer_call(
                context,
                self.callback_url(),
                media_streaming=media,
                transcription=transcription,
                operation_context=session_id,
            )
        except ServiceRequestError as error:
            # ACS unreachable: forget the event, so Event Grid's retry (it retries 5xx) answers.
            self.redis.delete(seen_key)
            log.warning("answer_call could not reach ACS: %s", error)
            return EventGridAnswer(503, {"error": "ACS unreachable; Event Grid will retry"})
        except HttpResponseError as error:
            log.warning("answer_call refused (%s): %s", error.status_code, error.message)
            return EventGridAnswer(200, {"event": event_id, "outcome": "answer failed"})
        call_id = cast(str, properties.call_connection_id)
        self._start_session(call_id, session_id, caller, "inbound")
        log.info("answered call %s (session %s)", call_id, session_id)
        return EventGridAnswer(200, {"event": event_id, "outcome": "answered", "call_id": call_id})

    # --- callbacks -------------------------------------------------------------------------------
    def on_callbacks(self, authorization: str | None, events: Any) -> int:
        """Apply each callback event; returns how many moved a call's state."""
        if not self.settings.auth_disabled:
            try:
                self._verify_token(authorization)
            except AcsAuthError as error:
                raise CallAuthError(str(error)) from None
        applied = 0
        for event in _event_list(events):
            if self._apply_callback(event):
                applied += 1
        return applied

    def _apply_callback(self, event: dict[str, Any]) -> bool:
        kind = str(event.get("type") or event.get("eventType") or "")
        short = kind.removeprefix(EVENT_PREFIX)
        data = event.get("data") or {}
        call_id = data.get("callConnectionId") if isinstance(data, dict) else None
        if not isinstance(call_id, str) or not call_id:
            return False
        if short not in CALLBACK_STATES and short not in OTHER_CALLBACKS:
            if short not in self._unknown_types_logged:
                self._unknown_types_logged.add(short)
                log.info("callback type %s is not handled; ignored", short[:80])
            return False
        event_id = event.get("id")
        if (
            isinstance(event_id, str)
            and event_id
            and not self.redis.set(
                SEEN_PREFIX + event_id, "1", nx=True, ex=self.settings.eventgrid_dedup_s
            )
        ):
            return False
        changes: dict[str, str] = {"last_event": short, "updated": f"{time.time():.3f}"}
        if short in CALLBACK_STATES:
            field, value = CALLBACK_STATES[short]
            changes[field] = value
            if value == "failed":
                result = data.get("resultInformation") or {}
                changes["error"] = str(result.get("message") or short)[:200]
        elif short == "ParticipantsUpdated":
            participants = data.get("participants") or []
            changes["participants"] = str(
                len(participants) if isinstance(participants, list) else 0
            )
        elif short == "ContinuousDtmfRecognitionToneReceived":
            tone = str(data.get("tone") or "")[:8]
            previous = self._state(call_id).get("dtmf", "")
            changes["dtmf"] = (previous + _tone_char(tone))[-MAX_DTMF_TONES:]
        state = self._update(call_id, changes)
        if changes.get("state") in ("disconnected", "failed"):
            self.redis.zrem(ACTIVE_CALLS, call_id)
        self._publish(state.get("session_id"), {"type": "call", "event": short, **state})
        return True

    # --- calls we place or end -------------------------------------------------------------------
    def initiate(self, target: Any) -> dict[str, Any]:
        if not isinstance(target, str) or not target.strip():
            raise CallControlError("'target' is required: a phone number (+E.164) or an ACS raw id")
        target = target.strip()
        identifier: PhoneNumberIdentifier | CommunicationUserIdentifier
        if target.startswith("+"):
            identifier = PhoneNumberIdentifier(target)
        elif target.startswith("8:acs:"):
            identifier = CommunicationUserIdentifier(target)
        else:
            raise CallControlError("'target' must be +E.164 or an ACS user id (8:acs:...)")
        source = (
            PhoneNumberIdentifier(self.settings.acs_source_number)
            if self.settings.acs_source_number
            else None
        )
        if target.startswith("+") and source is None:
            raise CallControlError("calling a phone number needs ACS_SOURCE_PHONE_NUMBER")
        session_id = uuid.uuid4().hex
        media, transcription = streaming_options(self.settings, session_id)
        try:
            properties = self.automation.create_call(
                identifier,
                self.callback_url(),
                source_caller_id_number=source,
                operation_context=session_id,
                media_streaming=media,
                transcription=transcription,
            )
        except HttpResponseError as error:
            raise CallControlError(f"create_call refused: {error.message}") from None
        call_id = cast(str, properties.call_connection_id)
        self._start_session(call_id, session_id, target, "outbound")
        return {"call_id": call_id, "session_id": session_id, "state": "connecting"}

    def hang_up(self, call_id: str) -> None:
        if not self.redis.exists(CALL_PREFIX + call_id):
            raise LookupError(call_id)
        self.automation.get_call_connection(call_id).hang_up(is_for_everyone=True)
        self._update(call_id, {"hangup_requested": "1"})

    # --- state -----------------------------------------------------------------------------------
    def callback_url(self) -> str:
        return public_base_url(self.settings) + CALLBACKS_PATH

    def call(self, call_id: str) -> dict[str, str] | None:
        state = self._state(call_id)
        return state or None

    def transcript(self, call_id: str) -> list[dict[str, str]] | None:
        """The call's conversation as its session holds it; None for an unknown call."""
        session_id = session_for_call(self.redis, call_id)
        if session_id is None:
            return None
        return MemoManager.from_redis(session_id, self.redis, self.settings).history

    def active_calls(self) -> list[dict[str, str]]:
        call_ids = cast(list[str], self.redis.zrange(ACTIVE_CALLS, 0, -1))
        calls = [self._state(call_id) for call_id in call_ids]
        return [call for call in calls if call]

    def _start_session(self, call_id: str, session_id: str, party: str, direction: str) -> None:
        ttl = self.settings.session_ttl_s
        map_call_to_session(self.redis, call_id, session_id, ttl)
        memo = MemoManager.from_redis(session_id, self.redis, self.settings)
        memo.set_context("call_id", call_id)
        memo.set_context("caller" if direction == "inbound" else "target_number", party)
        memo.persist()
        now = f"{time.time():.3f}"
        state = self._update(
            call_id,
            {
                "call_id": call_id,
                "session_id": session_id,
                "caller": party,
                "direction": direction,
                "state": "connecting",
                "started": now,
                "updated": now,
            },
            # A callback may have come before answer_call returned: keep what it set.
            only_missing=("state",),
        )
        self.redis.zadd(ACTIVE_CALLS, {call_id: time.time()})
        self._publish(session_id, {"type": "call", "event": "answered", **state})

    def _state(self, call_id: str) -> dict[str, str]:
        return cast(dict[str, str], self.redis.hgetall(CALL_PREFIX + call_id))

    def _update(
        self, call_id: str, changes: dict[str, str], only_missing: tuple[str, ...] = ()
    ) -> dict[str, str]:
        key = CALL_PREFIX + call_id
        with self.redis.pipeline(transaction=True) as pipe:
            for name in only_missing:
                pipe.hsetnx(key, name, changes.pop(name))
            pipe.hset(key, mapping={**changes, "call_id": call_id})
            pipe.expire(key, self.settings.session_ttl_s)
            pipe.hgetall(key)
            state = pipe.execute()[-1]
        if "session_id" not in state:
            session_id = session_for_call(self.redis, call_id)
            if session_id:
                self.redis.hset(key, "session_id", session_id)
                state["session_id"] = session_id
        return cast(dict[str, str], state)

    def _publish(self, session_id: str | None, message: dict[str, Any]) -> None:
        self.connections.broadcast_topic(CALLS_TOPIC, message)
        if session_id:
            self.connections.broadcast_session(session_id, message)


def _event_list(events: Any) -> list[dict[str, Any]]:
    if isinstance(events, dict):
        events = [events]
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise CallControlError("the body must be a JSON array of events")
    if len(events) > MAX_EVENTS_PER_DELIVERY:
        raise CallControlError(f"at most {MAX_EVENTS_PER_DELIVERY} events per delivery")
    return events


def _tone_char(tone: str) -> str:
    """ACS names tones (``one``, ``pound`` ...); the state keeps the key's character."""
    names = {
        "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
        "six": "6", "seven": "7", "eight": "8", "nine": "9", "pound": "#", "asterisk": "*",
    }  # fmt: skip
    return names.get(tone.lower(), tone if len(tone) == 1 else "?")
