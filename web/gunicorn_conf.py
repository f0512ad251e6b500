"""gunicorn settings for the web app, and hooks that run the dashboard's history recorder.

    gunicorn -c python:web.gunicorn_conf 'web.app:create_app()'

Threads, not processes: each dashboard WebSocket holds a thread while it is open (flask-sock needs
a threaded or gevent server), and the quota API is a Redis round trip per request. More processes
come from WEB_CONCURRENCY, which gunicorn reads itself.

Errors gunicorn answers itself, before the app sees the request (a header over
``limit_request_field_size``: 431; a request line over ``limit_request_line``: 414; a malformed
request: 400), are JSON ``{"detail": ...}`` like every other error of the app (web/errors.py),
not gunicorn's HTML page: :func:`write_json_error` takes the place of
``gunicorn.util.write_error``, which gunicorn's worker calls for exactly these answers (and for
a 500 it could not hand to the app).
"""

from __future__ import annotations

import json
from typing import Any

from gunicorn import util as gunicorn_util

from logship import start_log_shipping, stop_log_shipping
from settings import configure_logging, settings_or_exit
from telemetry import configure_tracing

_settings = settings_or_exit("web")

# Only after the settings check: web.services builds the Celery app, whose own check of the same
# settings would name the worker in the one-line error instead of the web.
from web.services import EXTENSION_KEY  # noqa: E402 - see above

bind = f"{_settings.web_host}:{_settings.web_port}"
worker_class = "gthread"
threads = 16
# Open WebSockets never finish on their own; do not let them hold a restart or Ctrl-C for long.
graceful_timeout = 5
# No access log: a dashboard URL may carry an access_token, and query strings do not belong in logs.
accesslog = None
# gunicorn's own bounds on what it parses (its defaults, stated so they are seen): a request line
# of 4094 bytes, 100 header fields, 8190 bytes a field. A browser's cookies and an Entra ID token
# fit well inside; anything over is answered 414/431 as JSON.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190


def error_response(status: int, reason: str, detail: str) -> bytes:
    """The whole HTTP answer gunicorn sends for an error it answers itself, as JSON."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + body


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn.util.write_error's signature, answering JSON instead of HTML."""
    detail = mesg or reason  # gunicorn sends no message for its own 500
    gunicorn_util.write_nonblock(sock, error_response(status_int, reason, detail))


# Set when gunicorn reads this file, before any worker forks: every worker answers JSON.
gunicorn_util.write_error = write_json_error


def post_fork(server: Any, worker: Any) -> None:
    configure_logging(_settings)
    # After the fork: a span exporter's thread does not survive one.
    configure_tracing("conduit-web")
    start_log_shipping(_settings)  # workers sharing LOG_DIR coordinate through its state file


def post_worker_init(worker) -> None:
    # The dashboard chart's history is recorded whether or not anyone watches (web/history.py).
    worker.wsgi.extensions[EXTENSION_KEY].broadcaster.keep_recording()


def worker_exit(server, worker) -> None:
    app = getattr(worker, "wsgi", None)
    if app is not None:
        app.extensions[EXTENSION_KEY].broadcaster.stop()
    stop_log_shipping()
