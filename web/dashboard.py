"""``/dashboard``: a self-contained live page (HTML, CSS and JS inlined, nothing fetched from
anywhere), and ``/ws/status``, the WebSocket that pushes it a status frame about once a second.

Every viewer's socket is fed by the app's one :class:`web.broadcaster.StatusBroadcaster`, so ten
open dashboards cost Redis what one does. The page is served with a strict Content-Security-Policy:
its inline script and style run by nonce, and it may connect only back to this origin.
"""

from __future__ import annotations

import secrets

from flask import Blueprint, render_template

from web.extensions import sock
from web.services import services

blueprint = Blueprint("dashboard", __name__, template_folder="templates")

# A viewer with no frame for this long (a stalled broadcaster) gets the socket closed, and the
# page reconnects.
FRAME_TIMEOUT_SECS = 15.0


@blueprint.get("/dashboard")
def page():
    nonce = secrets.token_urlsafe(16)
    html = render_template("dashboard.html", nonce=nonce, app_name=services().settings.app_name)
    return html, 200, page_headers(nonce)


def page_headers(nonce: str) -> dict[str, str]:
    """A live page's headers: its inline script and style run by nonce, it connects only back
    to this origin, and no cache keeps it."""
    policy = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"
    )
    return {"Content-Security-Policy": policy, "Cache-Control": "no-store"}


@sock.route("/ws/status", bp=blueprint)
def status_socket(ws) -> None:
    broadcaster = services().broadcaster
    subscription = broadcaster.subscribe()
    try:
        while ws.connected:
            frame = subscription.next_frame(timeout=FRAME_TIMEOUT_SECS)
            if frame is None:
                break
            ws.send(frame)
    finally:
        broadcaster.unsubscribe(subscription)
