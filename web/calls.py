"""``/api/v1/calls``: call control over HTTP; the logic is :class:`voice.calls.CallControl`.

- ``POST /api/v1/calls/incoming``: the Event Grid subscription's webhook (validation handshake,
  IncomingCall). Auth as any endpoint: give the subscription an ``X-API-Key`` delivery header
  (or Entra ID webhook auth, a bearer token this app checks).
- ``POST /api/v1/calls/callbacks``: Call Automation's callbacks, which carry ACS's own JWT instead
  (checked by :mod:`voice.acs_auth`), so the app's credential rule does not apply to them.
- ``POST /api/v1/calls/initiate`` ``{"target": "+1555..."}``, ``POST /api/v1/calls/<id>/hangup``.
- ``GET /api/v1/calls`` (active calls), ``GET /api/v1/calls/<id>``.
- ``/ws/calls`` (WebSocket): live call events for the dashboard; ``?session_id=`` narrows it to
  one call's session (its transcript).

One :class:`CallControl` and one :class:`ConnectionManager` per process, made when the blueprint
is registered.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import asdict
from typing import Any, cast

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request
from flask.blueprints import BlueprintSetupState

from voice.acs_auth import AcsTokenVerifier
from voice.calls import CALLS_TOPIC, CallAuthError, CallControl, CallControlError
from voice.connections import ConnectionManager
from voice.sessions import MemoManager, map_call_to_session, session_for_call
from web.dashboard import page_headers
from web.errors import json_error
from web.extensions import sock
from web.services import EXTENSION_KEY as SERVICES_KEY
from web.services import Services

blueprint = Blueprint("calls", __name__, template_folder="templates")
EXTENSION_KEY = "conduit_calls"
CONNECTIONS_KEY = "conduit_connections"
# A viewer socket with no event for this long sends a keep-alive frame, so a dead peer is noticed.
IDLE_FRAME_SECS = 15.0


def init_app(app: Flask) -> None:
    conduit: Services = app.extensions[SERVICES_KEY]
    settings = conduit.settings
    connections = ConnectionManager(conduit.redis, queue_size=settings.connection_queue_size)
    verifier = AcsTokenVerifier.from_settings(settings)
    app.extensions[EXTENSION_KEY] = CallControl(
        settings, conduit.redis, connections, verifier.verify
    )
    app.extensions[CONNECTIONS_KEY] = connections


def call_memory(call_id: str, session_id: str | None) -> MemoManager:
    """The memory a media socket's handler keeps the call in: the call's session in Redis
    (from ``call_session_map``; else the session named in the transport URL we gave ACS, when the
    socket opens before ``answer_call`` has returned), written turn by turn and shown live on the
    call's page."""
    conduit: Services = current_app.extensions[SERVICES_KEY]
    connections: ConnectionManager = current_app.extensions[CONNECTIONS_KEY]
    known = session_for_call(conduit.redis, call_id)
    session = known or session_id or uuid.uuid4().hex
    if known is None:
        map_call_to_session(conduit.redis, call_id, session, conduit.settings.session_ttl_s)

    def show(message: dict[str, str]) -> None:
        connections.broadcast_session(
            session, {"type": "transcript", "call_id": call_id, **message}
        )

    return MemoManager.from_redis(
        session, conduit.redis, conduit.settings, persist_each_change=True, on_message=show
    )


@blueprint.record_once
def _setup(state: BlueprintSetupState) -> None:
    init_app(cast(Flask, state.app))


def control() -> CallControl:
    return current_app.extensions[EXTENSION_KEY]


def _json() -> Any:
    try:
        return json.loads(request.get_data() or b"null")
    except ValueError:
        raise CallControlError("the body is not valid JSON") from None


@blueprint.errorhandler(CallControlError)
def _bad_request(error: CallControlError) -> tuple[Response, int]:
    return json_error(400, str(error))


@blueprint.errorhandler(CallAuthError)
def _unauthorized(error: CallAuthError) -> tuple[Response, int, dict[str, str]]:
    response, status = json_error(401, str(error))
    return response, status, {"WWW-Authenticate": 'Bearer error="invalid_token"'}


@blueprint.post("/api/v1/calls/incoming")
def incoming() -> tuple[Response, int]:
    answer = control().on_event_grid(_json())
    return jsonify(answer.body), answer.status


@blueprint.post("/api/v1/calls/callbacks")
def callbacks() -> tuple[Response, int]:
    applied = control().on_callbacks(request.headers.get("Authorization"), _json())
    return jsonify({"applied": applied}), 200


@blueprint.post("/api/v1/calls/initiate")
def initiate() -> tuple[Response, int]:
    body = _json()
    if not isinstance(body, dict):
        raise CallControlError("the body must be a JSON object with 'target'")
    return jsonify(control().initiate(body.get("target"))), 201


@blueprint.post("/api/v1/calls/<call_id>/hangup")
def hang_up(call_id: str) -> tuple[Response, int]:
    try:
        control().hang_up(call_id)
    except LookupError:
        return json_error(404, f"call {call_id} is unknown")
    return jsonify({"call_id": call_id, "hangup": "requested"}), 202


@blueprint.get("/api/v1/calls")
def active_calls() -> Response:
    return jsonify({"calls": control().active_calls()})


@blueprint.get("/api/v1/calls/status")
def status() -> Response:
    """This process's engine pool and live-update connections (a call in progress holds one
    engine set; after it, the set is back)."""
    from web.media import media_service  # web.media imports this module

    connections: ConnectionManager = current_app.extensions[CONNECTIONS_KEY]
    return jsonify(
        {
            "pools": [asdict(media_service().engines.stats())],
            "connections": len(connections.connections()),
        }
    )


@blueprint.get("/api/v1/calls/<call_id>/transcript")
def transcript(call_id: str) -> tuple[Response, int]:
    history = control().transcript(call_id)
    if history is None:
        return json_error(404, f"call {call_id} is unknown")
    return jsonify({"call_id": call_id, "history": history}), 200


@blueprint.get("/api/v1/calls/<call_id>")
def call(call_id: str) -> tuple[Response, int]:
    state = control().call(call_id)
    if state is None:
        return json_error(404, f"call {call_id} is unknown")
    return jsonify(state), 200


@blueprint.get("/dashboard/calls/<call_id>")
def call_page(call_id: str) -> tuple[str, int, dict[str, str]] | tuple[Response, int]:
    """One call's live page: its state and the transcript of both sides as it happens."""
    state = control().call(call_id)
    if state is None or not state.get("session_id"):
        return json_error(404, f"call {call_id} is unknown")
    nonce = secrets.token_urlsafe(16)
    html = render_template(
        "call.html",
        nonce=nonce,
        app_name=control().settings.app_name,
        call_id=call_id,
        session_id=state["session_id"],
        state=state,
    )
    return html, 200, page_headers(nonce)


@sock.route("/ws/calls", bp=blueprint)
def calls_socket(ws: Any) -> None:
    session_id = request.args.get("session_id") or None
    connections: ConnectionManager = current_app.extensions[CONNECTIONS_KEY]
    connection = connections.register(
        "dashboard",
        session_id=session_id,
        topics=() if session_id else (CALLS_TOPIC,),
    )
    try:
        if session_id:
            conduit: Services = current_app.extensions[SERVICES_KEY]
            memo = MemoManager.from_redis(session_id, conduit.redis, conduit.settings)
            ws.send(json.dumps({"type": "history", "history": memo.history}))
        else:
            ws.send(json.dumps({"type": "calls", "calls": control().active_calls()}))
        while ws.connected:
            message = connection.next_message(timeout=IDLE_FRAME_SECS)
            ws.send(json.dumps(message if message is not None else {"type": "idle"}))
    finally:
        connections.unregister(connection)
