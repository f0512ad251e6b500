"""gunicorn settings for the web app, and hooks that run the dashboard's history recorder.

    gunicorn -c python:web.gunicorn_conf 'web.app:create_app()'

Threads, not processes: each dashboard WebSocket holds a thread while it is open (flask-sock needs
a threaded or gevent server), and the quota API is a Redis round trip per request. More processes
come from WEB_CONCURRENCY, which gunicorn reads itself.
"""

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


def post_fork(server, worker) -> None:
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
