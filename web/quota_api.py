"""``GET /api/v1/quota``: every pool and deployment now, with its per-app breakdown.

The counter's ``/status`` shows one deployment per pool, as the older service knew only one; this
lists every deployment in settings or ever used on this Redis, with limits and who spent what.
"""

from __future__ import annotations

from flask import Blueprint

from web.counter import UNREACHABLE, unreachable
from web.services import services

blueprint = Blueprint("quota_api", __name__, url_prefix="/api/v1")
for _error in UNREACHABLE:
    blueprint.register_error_handler(_error, unreachable)


@blueprint.get("/quota")
def all_quota():
    limiter = services().limiter
    return {
        "window_seconds": limiter.window_s,
        "pools": [status.as_dict() for status in limiter.all_status()],
    }
