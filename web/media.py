"""``/api/v1/media``: the ACS media WebSocket and the voice agent's live status.

- ``GET /api/v1/media/stream``: ACS opens this WebSocket for each call (the ``transport_url`` given
  when the call is answered). ACS's bearer JWT is checked *before* the upgrade (voice/acs_auth.py):
  a missing or bad token is a 401 and no audio is ever read. The call id is the
  ``x-ms-call-connection-id`` header (or the ``callConnectionId`` query parameter). The socket is
  handed to the handler ``ACS_STREAMING_MODE`` names (voice/handlers/), on this gunicorn thread.
  Past ``MEDIA_MAX_CALLS`` concurrent calls in this process the socket is closed at once with
  1013 (try again later).
- ``GET /api/v1/media/status``: active calls, and per-turn latency p50/p95 per call and for the
  process (the usual app credential, like every other endpoint).

The app-wide authenticator leaves ``media.stream`` to this module (ACS does not hold our API key;
it signs its own tokens). ``AUTH_DISABLED`` opens the socket too, for local development only.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState
from simple_websocket import ConnectionClosed, Server

from settings import Settings, get_logger
from voice.acs_auth import AcsAuthError, AcsTokenVerifier
from voice.handlers import CallHandler, SocketClosed, UnknownStreamingMode, create_handler
from voice.latency import PROCESS_LATENCIES
from voice.pools import PoolExhausted, engine_pool
from web import calls
from web.errors import json_error
from web.services import EXTENSION_KEY as SERVICES_KEY

log = get_logger(__name__)

blueprint = Blueprint("media", __name__)

EXTENSION_KEY = "conduit.media"
CALL_ID_HEADER = "x-ms-call-connection-id"
# Call ids are GUIDs; anything else is cut to this alphabet and length before it reaches logs.
_CALL_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")
MAX_CALL_ID_CHARS = 128
CLOSE_TRY_LATER = 1013
CLOSE_ERROR = 1011
# Calls that ended, kept for the status page's totals.
ENDED_CALLS_KEPT = 50


class _AcsSocket:
    """simple-websocket's server socket as the handlers' MediaSocket."""

    def __init__(self, ws: Server) -> None:
        self._ws = ws

    def receive(self, timeout: float | None) -> str | bytes | None:
        try:
            return self._ws.receive(timeout)
        except ConnectionClosed:
            raise SocketClosed from None

    def send(self, message: str) -> None:
        self._ws.send(message)

    def close(self, code: int, reason: str) -> None:
        self._ws.close(reason=code, message=reason)


class MediaService:
    """This process's calls: the token check, the engines, admission and status."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.verifier = None if settings.auth_disabled else AcsTokenVerifier.from_settings(settings)
        # Warm engine sets, one per call in progress (voice/pools.py, STT_POOL_SIZE of them).
        self.engines = engine_pool(settings)
        self._lock = threading.Lock()
        self.lock = threading.Lock()  # guards warming
        self.warming: threading.Thread | None = None
        self.active: dict[str, CallHandler] = {}
        self.ended: list[dict[str, Any]] = []
        self.refused = 0

    def admit(self, call_id: str, handler: CallHandler) -> bool:
        with self._lock:
            if len(self.active) >= self.settings.media_max_calls or call_id in self.active:
                self.refused += 1
                return False
            self.active[call_id] = handler
            return True

    def leave(self, call_id: str, handler: CallHandler) -> None:
        with self._lock:
            if self.active.get(call_id) is handler:
                del self.active[call_id]
            self.ended = [*self.ended, {"call_id": call_id, **handler.report()}][-ENDED_CALLS_KEPT:]

    def status(self) -> dict[str, Any]:
        with self._lock:
            active = [{"call_id": cid, **h.report()} for cid, h in self.active.items()]
            ended = list(self.ended)
        return {
            "mode": self.settings.acs_streaming_mode,
            "engine": self.settings.voice_engine,
            "active_calls": len(active),
            "max_calls": self.settings.media_max_calls,
            "refused_calls": self.refused,
            "latency": PROCESS_LATENCIES.summary(),
            # Stage and writer threads alive in this process: 0 when no call is up (no leaks).
            "voice_threads": sum(t.name.startswith("voice-") for t in threading.enumerate()),
            "calls": active,
            "recent_calls": ended,
        }


def media_service() -> MediaService:
    return current_app.extensions[EXTENSION_KEY]


@blueprint.record_once
def _create_service(state: BlueprintSetupState) -> None:
    settings = state.app.extensions[SERVICES_KEY].settings
    media = MediaService(settings)
    state.app.extensions[EXTENSION_KEY] = media


@blueprint.before_app_request
def _warm_up_once() -> None:
    """On the process's first request (a health probe, usually), load in the background what the
    first call would otherwise wait ~1 s for: a decoder, espeak-ng, the tokenizer, the client."""
    media = current_app.extensions.get(EXTENSION_KEY)
    if media is None or media.warming is not None:
        return
    with media.lock:
        if media.warming is None:
            media.warming = threading.Thread(
                target=_warm_up, args=(media,), name="media-warm-up", daemon=True
            )
            media.warming.start()


def _warm_up(media: MediaService) -> None:
    try:
        from tasks.clients import completion_client
        from tasks.token_estimates import text_tokens

        text_tokens(["warm up"], media.settings.openai_engine)
        completion_client()
        media.engines.warm_up()
    except Exception:
        log.warning("media warm-up failed; the first call builds its engines", exc_info=True)


def _call_id() -> str:
    raw = request.headers.get(CALL_ID_HEADER) or request.args.get("callConnectionId") or ""
    cleaned = _CALL_ID_UNSAFE.sub("", raw)[:MAX_CALL_ID_CHARS]
    return cleaned or f"anonymous-{uuid.uuid4()}"


# websocket=True: werkzeug routes an Upgrade request only to rules that say they take one.
@blueprint.route("/api/v1/media/stream", methods=["GET"], websocket=True)
def stream() -> Any:
    media = media_service()
    if media.verifier is not None:
        try:
            media.verifier.verify(request.headers.get("Authorization"))
        except AcsAuthError as error:
            response, status = json_error(401, str(error))
            return response, status, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return json_error(400, "This endpoint is a WebSocket: connect with 'Upgrade: websocket'.")
    call_id = _call_id()
    settings = media.settings
    options = {
        **current_app.config.get("SOCK_SERVER_OPTIONS", {}),
        "max_message_size": settings.media_max_frame_bytes,
    }
    ws = Server(request.environ, **options)
    socket = _AcsSocket(ws)
    try:
        handler = create_handler(
            settings.acs_streaming_mode,
            socket,
            call_id=call_id,
            settings=settings,
            engines=media.engines,
            # The call's session in Redis (web/calls.py, call control).
            memory=calls.call_memory(call_id, request.args.get("session_id")),
        )
    except UnknownStreamingMode as error:
        log.error("%s", error)
        socket.close(CLOSE_ERROR, "streaming mode not available")
        return _after_websocket(ws)
    if not media.admit(call_id, handler):
        log.warning("media socket refused: %s calls already", settings.media_max_calls)
        socket.close(CLOSE_TRY_LATER, "too many concurrent calls")
        return _after_websocket(ws)
    started = time.monotonic()
    try:
        log.info("media socket open", extra={"call_id": call_id})
        handler.run()
    except PoolExhausted as error:
        log.warning("media socket refused: %s", error, extra={"call_id": call_id})
        socket.close(CLOSE_TRY_LATER, "no engines free; try again")
    finally:
        media.leave(call_id, handler)
        log.info(
            "media socket closed",
            extra={"call_id": call_id, "seconds": round(time.monotonic() - started, 1)},
        )
    return _after_websocket(ws)


@blueprint.get("/api/v1/media/status")
def status() -> Response:
    return jsonify(media_service().status())


def _after_websocket(ws: Server) -> Response:
    """What the WSGI server must get back once a socket it handed over is finished (as
    flask-sock answers: gunicorn is told the response is already sent)."""

    class WebSocketDone(Response):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            if ws.mode == "gunicorn":
                raise StopIteration
            if ws.mode == "werkzeug":
                return super().__call__(*args, **kwargs)
            return []

    return WebSocketDone()
