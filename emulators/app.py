"""The emulator's Flask app: Azure OpenAI's routes, OpenAI's ``/v1`` routes, control endpoints.

Every model request goes through the same steps, in Azure's order:

1. **auth** (``api-key`` or ``Authorization: Bearer``) → 401; **deployment** known → 404;
2. **charge** the arrival estimate to the deployment's limiter → 429 with Azure's headers; an
   admitted request stays charged whatever happens next (``ratelimit.py`` says why);
3. **validate** the body → 400, and **inject faults** (``/_emulator/config``) → 500/503 or a stall;
4. **answer**, paced by the simulated latency, with the rate-limit headers on every response.

One process serves every thread (see ``__main__.py``), so the limiter, the counters and the
controls held by :class:`Emulator` are shared by every request.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from emulators import chat, embeddings
from emulators.audio import MAX_FILE_BYTES, AudioRequest, decode_audio, format_transcript
from emulators.control import STAMP_HEADER, Controls, Stats
from emulators.errors import (
    BadRequest,
    DeploymentNotFound,
    EmulatorError,
    InjectedFault,
    RateLimited,
    Unauthorized,
)
from emulators.ratelimit import RateLimiter, load_limits
from emulators.recognizer import DEFAULT_PHRASES_FILE, Recognizer, read_phrases
from emulators.search.routes import init_search
from settings import Settings, get_settings
from settings.validation import describe_invalid_fields, field_name

# An upload may reach Whisper's file limit; the multipart framing and form fields need a little
# more. Bodies beyond this are refused before they are read.
MAX_BODY_BYTES = MAX_FILE_BYTES + 1024 * 1024
# A request body Azure could not parse still costs about this many characters a token.
CHARS_PER_TOKEN = 4
T = TypeVar("T")

models = Blueprint("models", __name__)
control = Blueprint("control", __name__)


class Emulator:
    """State shared by every request thread: limits, counters, controls, the recogniser."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limiter = RateLimiter(load_limits(settings), settings.emulator_window_s)
        self.stats = Stats()
        # Replaced whole by /_emulator/config; a request reads it once and keeps that copy.
        self.controls = Controls.from_settings(settings)
        self._recognizer: Recognizer | None = None
        self._recognizer_lock = threading.Lock()

    def recognizer(self) -> Recognizer:
        """Loaded on first use: most emulator runs never transcribe (0.8 s saved per start)."""
        with self._recognizer_lock:
            if self._recognizer is None:
                path = self.settings.emulator_stt_phrases_file or DEFAULT_PHRASES_FILE
                self._recognizer = Recognizer(read_phrases(path))
            return self._recognizer


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    app = Flask("emulators")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["emulator"] = Emulator(settings)
    app.register_blueprint(models)
    app.register_blueprint(control)
    init_search(app, settings)
    app.register_error_handler(EmulatorError, _emulator_error)
    app.register_error_handler(HTTPException, _http_error)
    app.after_request(_add_rate_limit_headers)
    return app


def _emulator() -> Emulator:
    return current_app.extensions["emulator"]


# --- the request pipeline ------------------------------------------------------------------------


def _presented_key() -> str:
    bearer = request.headers.get("Authorization", "")
    return request.headers.get("api-key") or bearer.removeprefix("Bearer ").strip()


def _check_key(required: bool) -> None:
    """Any non-empty key in dev; exactly EMULATOR_API_KEY when it is set."""
    configured = _emulator().settings.emulator_api_key
    presented = _presented_key()
    if configured is not None:
        if presented != configured.get_secret_value():
            raise Unauthorized()
    elif required and not presented:
        raise Unauthorized()


@models.before_request
def _authenticate() -> None:
    _check_key(required=True)


@control.before_request
def _authenticate_control() -> None:
    # Open in dev; behind the key when one is configured. Health checks never need one.
    if request.endpoint != "control.health":
        _check_key(required=False)


def _json_body() -> dict[str, Any]:
    try:
        body = json.loads(request.get_data() or b"null")
    except ValueError:
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body


def _deployment(from_path: str | None, model: object) -> str:
    """The deployment: from the Azure path, or the ``model`` of an OpenAI-style request."""
    deployment = from_path or model
    if not isinstance(deployment, str) or not deployment:
        raise BadRequest("'model' is required", "model")
    if deployment not in _emulator().limiter.limits:
        raise DeploymentNotFound(deployment)
    return deployment


def _admit(
    deployment: str, operation: str, build: Callable[[], T], estimate: Callable[[T | None], int]
) -> T:
    """Charge the arrival estimate, then return the validated request (or raise its 400). An
    invalid request is charged too, with what can be estimated without it, so a client over its
    limit hears 429 before it hears what is wrong with the request."""
    try:
        parsed = build()
    except EmulatorError:
        _charge(deployment, operation, estimate(None))
        raise
    _charge(deployment, operation, estimate(parsed))
    _inject_faults(deployment, g.setdefault("controls", _emulator().controls))
    return parsed


def _charge(deployment: str, operation: str, tokens: int) -> None:
    """Charge ``tokens`` to ``deployment``, recording the decision; RateLimited when refused."""
    emulator = _emulator()
    decision = emulator.limiter.charge(deployment, tokens)
    _record_stamp_lag(emulator)
    emulator.stats.record_charge(deployment, decision.admitted, tokens, _body_digest())
    g.rate_limit_headers = decision.headers()
    if not decision.admitted:
        api_version = request.args.get("api-version", "v1")
        raise RateLimited(
            operation, api_version, decision.reason, math.ceil(decision.retry_after_s)
        )


def _body_digest() -> bytes:
    """What identifies a request's content: its route and JSON body, or for an upload its form
    fields and file bytes (a multipart body's boundary differs on every send)."""
    digest = hashlib.sha256(request.path.encode())
    if request.files or request.form:
        for name, value in sorted(request.form.items(multi=True)):
            digest.update(f"\x00{name}={value}".encode())
        for name, upload in sorted(request.files.items(multi=True)):
            digest.update(f"\x00{name}:{upload.filename}:".encode())
            position = upload.stream.tell()
            upload.stream.seek(0)
            digest.update(upload.stream.read())
            upload.stream.seek(position)
    else:
        digest.update(request.get_data(cache=True))
    return digest.digest()


def _record_stamp_lag(emulator: Emulator) -> None:
    """How long after the client's stamp (STAMP_HEADER) the request is charged, when it says."""
    stamp = request.headers.get(STAMP_HEADER, "")
    if stamp.isdigit():
        emulator.stats.record_stamp_lag(time.time_ns() // 1000 - int(stamp))


def _inject_faults(deployment: str, controls: Controls) -> None:
    if controls.stall_rate and random.random() < controls.stall_rate:
        _emulator().stats.record_fault(deployment)
        # Outlives the client's timeout: the client gives up, as it would on a hung upstream.
        time.sleep(controls.stall_s)
    if controls.error_rate and random.random() < controls.error_rate:
        _emulator().stats.record_fault(deployment)
        raise InjectedFault(controls.error_status)


def _pause(milliseconds: float) -> None:
    if milliseconds > 0:
        time.sleep(milliseconds / 1000)


def _is_azure_route() -> bool:
    return request.path.startswith("/openai/")


# --- model routes --------------------------------------------------------------------------------


@models.post("/openai/deployments/<deployment>/chat/completions")
@models.post("/v1/chat/completions")
def chat_completions(deployment: str | None = None) -> Response:
    body = _json_body()
    deployment = _deployment(deployment, body.get("model"))
    completion = _admit(
        deployment,
        "ChatCompletions_Create",
        build=lambda: chat.ChatRequest.from_body(deployment, body),
        estimate=lambda parsed: (
            chat.charge_estimate(parsed) if parsed else len(request.get_data()) // CHARS_PER_TOKEN
        ),
    )
    controls: Controls = g.controls
    choices = chat.complete(completion)
    azure = _is_azure_route()
    if completion.stream:
        chunks = chat.stream_chunks(completion, choices, azure)
        return Response(_server_sent_events(chunks, controls), mimetype="text/event-stream")
    _pause(
        controls.first_token_ms
        + controls.token_ms * sum(choice.completion_tokens for choice in choices)
    )
    return jsonify(chat.completion_body(completion, choices, azure))


def _server_sent_events(chunks: Iterator[chat.StreamChunk], controls: Controls) -> Iterator[str]:
    _pause(controls.first_token_ms)
    for chunk in chunks:
        _pause(controls.token_ms * chunk.tokens)
        yield f"data: {json.dumps(chunk.body)}\n\n"
    yield "data: [DONE]\n\n"


@models.post("/openai/deployments/<deployment>/embeddings")
@models.post("/v1/embeddings")
def create_embeddings(deployment: str | None = None) -> Response:
    body = _json_body()
    deployment = _deployment(deployment, body.get("model"))
    embedding_request = _admit(
        deployment,
        "Embeddings_Create",
        build=lambda: embeddings.EmbeddingRequest.from_body(deployment, body),
        estimate=lambda _parsed: embeddings.estimate_tokens(body),
    )
    _pause(g.controls.first_token_ms)
    return jsonify(embeddings.embeddings_body(embedding_request))


@models.post("/openai/deployments/<deployment>/audio/transcriptions")
@models.post("/v1/audio/transcriptions")
def transcriptions(deployment: str | None = None) -> Response:
    return _speech_to_text("transcribe", "Transcriptions_Create", deployment)


@models.post("/openai/deployments/<deployment>/audio/translations")
@models.post("/v1/audio/translations")
def translations(deployment: str | None = None) -> Response:
    return _speech_to_text("translate", "Translations_Create", deployment)


def _speech_to_text(task: str, operation: str, deployment: str | None) -> Response:
    deployment = _deployment(deployment, request.form.get("model"))
    # Whisper is limited by requests alone: an upload costs no tokens.
    audio_request = _admit(
        deployment,
        operation,
        build=lambda: AudioRequest.from_form(task, request.form, request.files),
        estimate=lambda _parsed: 0,
    )
    pcm = decode_audio(audio_request.data, audio_request.filename)
    transcript = _emulator().recognizer().transcribe(pcm)
    _pause(g.controls.first_token_ms)
    text, content_type = format_transcript(audio_request, transcript)
    return Response(text, content_type=content_type)


# --- control endpoints (dev only) ----------------------------------------------------------------


@control.get("/health")
def health() -> Response:
    return jsonify(status="ok", deployments=sorted(_emulator().limiter.limits))


@control.get("/_emulator/config")
def read_config() -> Response:
    return jsonify(_emulator().controls.model_dump())


@control.post("/_emulator/config")
def update_config() -> Response:
    emulator = _emulator()
    try:
        emulator.controls = emulator.controls.updated(_json_body())
    except ValidationError as error:
        field = field_name(error.errors()[0]["loc"])
        raise BadRequest(describe_invalid_fields(error), field) from None
    return jsonify(emulator.controls.model_dump())


@control.get("/_emulator/stats")
def read_stats() -> Response:
    emulator = _emulator()
    limits = {
        name: {"tpm": limit.tpm, "rpm": limit.rpm}
        for name, limit in emulator.limiter.limits.items()
    }
    return jsonify(
        deployments=emulator.stats.snapshot(),
        limits=limits,
        window_s=emulator.limiter.token_window_s,
        stamp_to_charge_ms=emulator.stats.stamp_lags_ms(),
    )


@control.post("/_emulator/reset")
def reset() -> Response:
    """Zero the counters and empty every rate-limit window: a fresh emulator for the next run."""
    emulator = _emulator()
    emulator.stats.reset()
    emulator.limiter.reset()
    return jsonify(reset=True)


# --- responses -----------------------------------------------------------------------------------


def _emulator_error(error: EmulatorError) -> tuple[Response, int]:
    return jsonify(error.body()), error.status


def _http_error(error: HTTPException) -> tuple[Response, int]:
    status = error.code or 500
    if status == 413:
        message = f"Maximum content size limit ({MAX_BODY_BYTES}) exceeded."
    elif status == 404:
        message = "Resource not found"  # Azure's text for a path it does not serve
    else:
        message = error.description or error.name
    return jsonify({"error": {"code": str(status), "message": message}}), status


def _add_rate_limit_headers(response: Response) -> Response:
    response.headers.update(g.get("rate_limit_headers", {}))
    return response
