"""The ACS emulator's Flask app: Call Automation REST routes, the JWKS, and the control API.

REST routes answer as ACS does: every request HMAC-signed with the access key (401 otherwise),
``api-version`` required (400), errors as ``{"error": {"code", "message"}}``. The call logic is in
:mod:`emulators.acs.network`; this module only maps HTTP to it.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
from flask import Blueprint, Flask, Response, current_app, jsonify, request

from emulators.acs.caller import CallScript
from emulators.acs.hmac_auth import HmacError, verify
from emulators.acs.network import CALL_WAIT_SECS, CallNotFound, CallStateError, Network
from emulators.acs.tokens import TokenIssuer
from emulators.recognizer import DEFAULT_PHRASES_FILE, Recognizer, read_phrases
from settings import Settings, get_settings
from settings.calls import ACS_EMULATOR_DEV_KEY, ACS_EMULATOR_RESOURCE_ID

EXTENSION_KEY = "acs_emulator"
# Call Automation bodies are small JSON documents; a play request with a long SSML is the largest.
MAX_BODY_BYTES = 256 * 1024
# The identity calls placed by Conduit come from when no source number is given.
SOURCE_ID = "8:acs:conduit-emulator"

rest = Blueprint("acs_rest", __name__)
control = Blueprint("acs_control", __name__)


class AcsEmulator:
    """State shared by every request thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.directory = Path(settings.acs_emulator_dir)
        self.access_key = _access_key(settings)
        self.issuer = TokenIssuer(
            self.directory, settings.acs_resource_id or ACS_EMULATOR_RESOURCE_ID
        )
        self._recognizer: Recognizer | None = None
        self._recognizer_lock = threading.Lock()
        key = settings.acs_emulator_target_api_key
        self.network = Network(
            self.issuer,
            self.directory / "reports",
            SOURCE_ID,
            transcribe=self.transcribe,
            target_url=settings.acs_emulator_target_url,
            target_api_key=key.get_secret_value() if key else None,
        )

    def transcribe(self, pcm: np.ndarray) -> str:
        """The local recogniser's text for 16 kHz speech (loaded on first use)."""
        with self._recognizer_lock:
            if self._recognizer is None:
                path = self.settings.emulator_stt_phrases_file or DEFAULT_PHRASES_FILE
                self._recognizer = Recognizer(read_phrases(path))
        return self._recognizer.transcribe(pcm).text


def _access_key(settings: Settings) -> str:
    """The key requests must be signed with: the configured connection string's, or dev's."""
    if settings.acs_connection_string is None:
        return ACS_EMULATOR_DEV_KEY
    parts = dict(
        part.partition("=")[::2]
        for part in settings.acs_connection_string.get_secret_value().split(";")
        if part
    )
    return parts.get("accesskey", ACS_EMULATOR_DEV_KEY)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    app = Flask("emulators.acs")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions[EXTENSION_KEY] = AcsEmulator(settings)
    app.register_blueprint(rest)
    app.register_blueprint(control)
    return app


def emulator() -> AcsEmulator:
    return current_app.extensions[EXTENSION_KEY]


def _error(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


def _body() -> dict[str, Any]:
    try:
        body = json.loads(request.get_data() or b"{}")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ValueError("The request body must be a JSON object.")
    return body


# --- REST ----------------------------------------------------------------------------------------
@rest.before_request
def _authenticate() -> tuple[Response, int] | None:
    if request.endpoint == "acs_rest.keys":
        return None
    path = request.full_path.rstrip("?") if request.query_string else request.path
    try:
        verify(
            emulator().access_key,
            request.method,
            path,
            headers=dict(request.headers),
            body=request.get_data(),
        )
    except HmacError as error:
        return _error(401, "Unauthorized", str(error))
    if not request.args.get("api-version"):
        return _error(
            400, "MissingApiVersionParameter", "The api-version query parameter is required."
        )
    return None


@rest.get("/calling/keys")
def keys() -> Response:
    return jsonify(emulator().issuer.jwks())


@rest.post("/calling/callConnections:answer")
def answer() -> tuple[Response, int]:
    try:
        call = emulator().network.answer(_body())
    except CallNotFound as error:
        return _error(404, "NotFound", str(error))
    except CallStateError as error:
        return _error(400, "BadRequest", str(error))
    except ValueError as error:
        return _error(400, "BadRequest", str(error))
    return jsonify(call.properties(SOURCE_ID)), 200


@rest.post("/calling/callConnections:reject")
def reject() -> tuple[Response, int]:
    try:
        emulator().network.reject(_body())
    except CallNotFound as error:
        return _error(404, "NotFound", str(error))
    except (CallStateError, ValueError) as error:
        return _error(400, "BadRequest", str(error))
    return jsonify({}), 204


@rest.post("/calling/callConnections")
def create() -> tuple[Response, int]:
    try:
        call = emulator().network.create(_body())
    except ValueError as error:
        return _error(400, "BadRequest", str(error))
    return jsonify(call.properties(SOURCE_ID)), 201


@rest.route("/calling/callConnections/<target>", methods=["GET", "POST", "DELETE"])
def call_action(target: str) -> tuple[Response, int]:  # noqa: PLR0911 - one answer per action
    call_id, _, action = target.partition(":")
    network = emulator().network
    try:
        if request.method == "GET" and not action:
            return jsonify(network.get(call_id).properties(SOURCE_ID)), 200
        if (request.method == "DELETE" and not action) or action == "terminate":
            network.hang_up(call_id)
            return jsonify({}), 204
        if request.method != "POST":
            return _error(405, "MethodNotAllowed", f"{request.method} {target}")
        if action in ("startMediaStreaming", "stopMediaStreaming"):
            network.media_streaming(call_id, start=action.startswith("start"))
        elif action in ("startTranscription", "stopTranscription"):
            network.transcription(call_id, start=action.startswith("start"))
        elif action == "play":
            network.play(call_id, _body())
        else:
            return _error(404, "NotFound", f"The emulator does not implement :{action}")
    except CallNotFound:
        return _error(404, "NotFound", f"Call connection {call_id} is unknown")
    except (CallStateError, ValueError) as error:
        return _error(400, "BadRequest", str(error))
    return jsonify({}), 202


# --- control -------------------------------------------------------------------------------------
@control.get("/_emulator/acs/health")
def health() -> Response:
    return jsonify({"status": "ok", "calls": len(emulator().network.calls())})


@control.post("/_emulator/acs/calls")
def place_call() -> tuple[Response, int]:
    """Ring Conduit. Body: ``{"question" | "utterances", "barge_in", "dtmf", "caller",
    "target_url", "target_api_key", "deliveries", "wait"}``; with ``wait`` the answer is the
    finished call."""
    try:
        body = _body()
        script = CallScript.from_json(body)
        if not script.utterances:
            raise ValueError("say something: give 'question' or 'utterances'")
        call = emulator().network.place_call(
            script,
            caller=str(body.get("caller") or "+15550100"),
            target=str(body.get("target") or "+15550199"),
            target_url=body.get("target_url"),
            deliveries=int(body.get("deliveries", 1)),
            target_api_key=body.get("target_api_key"),
        )
    except (CallStateError, ValueError, TypeError) as error:
        return _error(400, "BadRequest", str(error))
    if body.get("wait"):
        call.ended.wait(float(body.get("timeout_s", CALL_WAIT_SECS)))
    return jsonify(call.summary()), 201


@control.get("/_emulator/acs/calls")
def list_calls() -> Response:
    return jsonify({"calls": [call.summary() for call in emulator().network.calls()]})


@control.get("/_emulator/acs/calls/<call_id>")
def get_call(call_id: str) -> tuple[Response, int]:
    try:
        return jsonify(emulator().network.get(call_id).summary()), 200
    except CallNotFound:
        return _error(404, "NotFound", f"call {call_id} is unknown")
