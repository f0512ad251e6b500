"""gunicorn settings for the web app.

    gunicorn -c python:web.gunicorn_conf 'web.app:create_app()'

Threads, not processes: each dashboard WebSocket holds a thread while it is open (flask-sock needs
a threaded or gevent server), and the quota API is a Redis round trip per request. More processes
come from WEB_CONCURRENCY, which gunicorn reads itself.
"""

from settings import configure_logging, get_settings
from telemetry import configure_tracing

_settings = get_settings()

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
