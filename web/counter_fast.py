"""The counter's hot routes (``POST /lock``, ``/report``, ``/release`` of every pool) answered
before Flask: a WSGI middleware around the app.

Why: profiled under gunicorn, a lock + report pair spent most of its time outside the quota
decision: Flask's request context, URL routing, before-request hooks, its JSON provider and
response object cost more than the Redis round trip itself, and the older counter's callers make
two such requests per model call. Here a request is parsed, authenticated with the app's own
:class:`~web.auth.Authenticator`, answered by the same functions the Flask views use
(web/counter.py's ``*_answer``), and written back, with the same status codes and bodies: 401
for a missing or wrong credential, 413 over the size limit, 400 for bad JSON, a count that is not
a strict integer or an id quota refuses, the FastAPI-shaped 422 for a missing field, 503 while
quota's Redis is unreachable. Every other request (and any other method) goes to Flask.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import ValidationError

from quota import QuotaLimiter
from settings import get_logger
from settings.jsonsafe import JsonRejected, loads_bounded
from web.auth import Authenticator, AuthError
from web.counter import ANSWERS, POOL_PREFIXES, UNREACHABLE, BadCount, unreachable_detail

log = get_logger(__name__)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
REASONS = {
    200: "200 OK",
    400: "400 BAD REQUEST",
    401: "401 UNAUTHORIZED",
    413: "413 REQUEST ENTITY TOO LARGE",
    422: "422 UNPROCESSABLE ENTITY",
    500: "500 INTERNAL SERVER ERROR",
    503: "503 SERVICE UNAVAILABLE",
}


class _Headers:
    """What the Authenticator reads of a request, from the WSGI environ."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self._environ = environ

    def get(self, name: str, default: str | None = None) -> str | None:
        key = "HTTP_" + name.upper().replace("-", "_")
        return self._environ.get(key, default)


class _Request:
    def __init__(self, environ: dict[str, Any]) -> None:
        self.headers = _Headers(environ)
        self.args: dict[str, str] = {}  # the counter's routes take no query credential


class CounterFastPath:
    """``app.wsgi_app = CounterFastPath(app.wsgi_app, authenticator, limiter, max_bytes)``."""

    def __init__(
        self, app: WsgiApp, authenticator: Authenticator, limiter: QuotaLimiter, max_bytes: int
    ) -> None:
        self._app = app
        self._authenticator = authenticator
        self._limiter = limiter
        self._max_bytes = max_bytes
        # path -> (action, pool, the Flask endpoint name the Authenticator knows it by)
        self._routes = {
            f"{prefix}/{action}": (
                action,
                pool,
                f"counter.{'' if pool == 'completion' else pool + '_'}{action}",
            )
            for pool, prefix in POOL_PREFIXES.items()
            for action in ANSWERS
        }

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        route = self._routes.get(environ.get("PATH_INFO", ""))
        if route is None or environ.get("REQUEST_METHOD") != "POST":
            return self._app(environ, start_response)
        status, body, extra = self._answer(environ, *route)
        payload = json.dumps(body, allow_nan=False).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            *extra,
        ]
        start_response(REASONS.get(status, f"{status} ERROR"), headers)
        return [payload]

    def _answer(  # noqa: PLR0911 - one answer per kind of failure reads best flat
        self, environ: dict[str, Any], action: str, pool: str, endpoint: str
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        try:
            self._authenticator.authenticate(_Request(environ), endpoint)  # type: ignore[arg-type]
        except AuthError as error:
            challenge = ("WWW-Authenticate", 'Bearer error="invalid_token"')
            return 401, {"detail": str(error)}, [challenge]
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return 400, {"detail": "Content-Length is not a number"}, []
        if length > self._max_bytes:
            return 413, {"detail": f"the body is over {self._max_bytes} bytes"}, []
        try:
            # The same bounded, strict parser as every Flask route (web/strict_json.py).
            data = loads_bounded(environ["wsgi.input"].read(length), max_bytes=self._max_bytes)
        except JsonRejected as error:
            return 400, {"detail": str(error)}, []
        try:
            status, body = ANSWERS[action](self._limiter, pool, data)
        except BadCount as error:
            return 400, {"detail": str(error)}, []
        except ValidationError as error:
            # FastAPI's 422 shape, as web/errors.py answers it for the Flask routes.
            problems = error.errors(include_url=False, include_context=False, include_input=False)
            return 422, {"detail": problems}, []
        except UNREACHABLE as error:
            return 503, {"detail": unreachable_detail(error)}, []
        except Exception:
            log.exception("unhandled error in request")
            return 500, {"detail": "Internal server error; the log has the details."}, []
        return status, body, []
