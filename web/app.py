"""The Flask app factory: ``gunicorn -c web/gunicorn_conf.py 'web.app:create_app()'``.

``create_app`` sets safe defaults, then reads settings, opens the shared connections once
(:mod:`web.services`), binds the extensions and registers the blueprints:

- ``counter``   the older HTTP token counter's API, backed by quota/ (``/``, ``/lock`` ...)
- ``quota_api`` ``/api/v1/quota``: every pool and deployment with its per-app breakdown
- ``health``    ``/health`` (liveness, open) and ``/ready`` (Redis, broker, bridge, workers)
- ``dashboard`` ``/dashboard`` and its WebSocket ``/ws/status``
- ``metrics``   ``/metrics``: the fleet in Prometheus's text format (web/metrics.py)

Every endpoint but ``/`` and ``/health`` needs a credential (see :mod:`web.auth`).
"""

from __future__ import annotations

from flask import Flask, request

from settings import Settings, get_logger, get_settings
from telemetry import instrument_flask
from web import calls, counter, dashboard, health, media, metrics, quota_api
from web.auth import Authenticator
from web.errors import register_error_handlers
from web.extensions import sock
from web.services import Services
from web.strict_json import MAX_REQUEST_BYTES, StrictJSONProvider, StrictRequest

log = get_logger(__name__)

# A WebSocket peer that stops answering pings is dropped after about this long.
WEBSOCKET_PING_INTERVAL_SECS = 25


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    # Static assets are inlined into the dashboard page, so no unauthenticated /static route.
    app = Flask(__name__, static_folder=None)
    # Bounded, strict JSON both ways (web/strict_json.py), for every endpoint.
    app.json = StrictJSONProvider(app)
    app.request_class = StrictRequest
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        SOCK_SERVER_OPTIONS={"ping_interval": WEBSOCKET_PING_INTERVAL_SECS},
    )

    authenticator = Authenticator(settings)
    if authenticator.disabled:
        log.warning(
            "AUTH_DISABLED is set: every endpoint is open to anyone who can reach "
            "%s:%s. Use this for local development only.",
            settings.web_host,
            settings.web_port,
        )
    for warning in authenticator.config_warnings():
        log.warning("%s", warning)

    @app.before_request
    def _require_credentials() -> None:
        authenticator.authenticate(request, request.endpoint)

    instrument_flask(app)
    conduit = Services.create(settings)
    conduit.init_app(app)
    sock.init_app(app)
    register_error_handlers(app)
    for blueprint in (
        counter.blueprint,
        quota_api.blueprint,
        health.blueprint,
        dashboard.blueprint,
        media.blueprint,
        calls.blueprint,
        metrics.blueprint,
    ):
        app.register_blueprint(blueprint)
    return app
