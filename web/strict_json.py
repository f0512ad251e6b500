"""Strict JSON in and out of the web app: bounded bodies in, standard JSON out.

In: every ``request.get_json()`` goes through :func:`settings.jsonsafe.loads_bounded` (the
bridge's parser too): size and nesting depth are checked on the text before ``json.loads``, and
``NaN``/``Infinity`` are refused. A body over a bound is a ``ValueError``, which Flask answers
as 400 ``{"detail": "body is nested deeper than 64 levels"}`` (:class:`StrictRequest` says
which bound, where Flask would say only "Bad Request") instead of the RecursionError's 500 a
~1 KB body of nested brackets used to cause.

Out: ``allow_nan=False``, so a NaN or an infinity that slipped into an answer fails loudly
(500, logged) instead of going out as ``NaN``, which no strict JSON parser reads.
"""

from __future__ import annotations

from typing import Any

from flask import Request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest

from settings.jsonsafe import JsonRejected, loads_bounded

# The largest body any endpoint takes is a counter request of a few hundred bytes.
MAX_REQUEST_BYTES = 64 * 1024


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider with bounded, strict parsing and no NaN on the way out."""

    # Keep the older counter's field order in answers.
    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads_bounded(s, max_bytes=MAX_REQUEST_BYTES)

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("allow_nan", False)
        return super().dumps(obj, **kwargs)


class StrictRequest(Request):
    """Flask's request, answering a refused JSON body with the parser's one-line reason (which
    names the bound or the constant at fault and never quotes the body)."""

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        if isinstance(e, JsonRejected):
            raise BadRequest(str(e)) from e
        return super().on_json_loading_failed(e)
