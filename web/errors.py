"""Every error the web app returns is JSON ``{"detail": ...}``, the older counter's shape.

The older counter was a FastAPI service, so its clients read ``detail`` on any non-2xx answer;
Flask's HTML error pages would break them.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from settings import get_logger
from web.auth import AuthError

log = get_logger(__name__)


def json_error(status: int, detail: object) -> tuple[Response, int]:
    return jsonify(detail=detail), status


def _http_error(error: HTTPException) -> tuple[Response, int]:
    return json_error(error.code or 500, error.description)


def _auth_error(error: AuthError) -> tuple[Response, int, dict[str, str]]:
    response, status = json_error(401, str(error))
    return response, status, {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def _invalid_body(error: ValidationError) -> tuple[Response, int]:
    # FastAPI's 422 shape: a list of {loc, msg, type}, so old clients' error handling still fits.
    return json_error(
        422, error.errors(include_url=False, include_context=False, include_input=False)
    )


def _unexpected(error: Exception) -> tuple[Response, int]:
    log.exception("unhandled error in request")
    return json_error(500, "Internal server error; the log has the details.")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(AuthError, _auth_error)
    app.register_error_handler(ValidationError, _invalid_body)
    app.register_error_handler(Exception, _unexpected)
