"""Bounded, strict JSON parsing for bodies that come from outside: size and depth before parsing.

``json.loads`` recurses once per nesting level, and so does everything that walks its result
(pydantic, ``json.dumps``, kombu). A ~1 KB body of 500 nested lists parses, then crashes the
next walker with ``RecursionError``; at ~1,000 levels ``json.loads`` itself crashes. So the
size and the nesting depth are measured on the text, without recursion, before ``json.loads``
sees it, and a body over either bound is rejected with a :class:`JsonRejected` saying which.
``NaN``, ``Infinity`` and ``-Infinity`` are rejected too: they are not JSON, and a value parsed
from them would be written back out as the same non-JSON.

No I/O and no Conduit imports: the bridge (bridge/routing.py) and the web API use it alike.

    >>> loads_bounded('{"id": 1, "tags": [["a"]]}', max_bytes=1024)
    {'id': 1, 'tags': [['a']]}
    >>> loads_bounded("[" * 100 + "]" * 100, max_bytes=1024)
    Traceback (most recent call last):
    ...
    settings.jsonsafe.JsonRejected: body is nested deeper than 64 levels
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any, Literal

# Far deeper than any message or request body Conduit defines (the deepest is 3 levels), far
# below where anything recursive breaks (Python's recursion limit is 1,000 frames).
DEFAULT_MAX_DEPTH = 64

# One token at a time: a JSON string from its opening quote to the first unescaped closing one
# (or to the end of an unterminated one), or a bracket. A string always matches once its quote
# is reached, so the scan is linear: no quote is ever scanned from twice.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}

RejectionKind = Literal["too_large", "too_deep", "invalid"]


class JsonRejected(ValueError):
    """The body is not JSON we accept; ``kind`` says why (``too_large``, ``too_deep`` or
    ``invalid``) and the message is one line starting "body ...", fit to show to the sender."""

    def __init__(self, kind: RejectionKind, message: str) -> None:
        super().__init__(message)
        self.kind: RejectionKind = kind


def nesting_depth(text: str) -> int:
    """How deeply the arrays and objects of ``text`` nest, without parsing (and so without
    recursion). Exact for valid JSON. For invalid JSON it is exact up to the first error, so it
    never undercounts what ``json.loads`` would descend into before failing."""
    steps = (_DEPTH_STEP.get(token, 0) for token in _TOKENS.findall(text))
    return max(accumulate(steps, initial=0))


def _reject_constant(name: str) -> Any:
    raise JsonRejected("invalid", f"body holds {name}, which is not JSON (only finite numbers are)")


def _too_large(max_bytes: int) -> JsonRejected:
    return JsonRejected("too_large", f"body is over the limit of {max_bytes} bytes")


# Built once: json.loads with an argument builds a decoder per call, which cost the counter's
# requests (web/counter_server.py) more than the parse.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def loads_bounded(data: str | bytes, *, max_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """``json.loads`` of a body from outside: bounded in size and depth, strict about numbers.
    Raises :class:`JsonRejected` (a ``ValueError``) for every body it does not return."""
    if isinstance(data, bytes):
        if len(data) > max_bytes:
            raise _too_large(max_bytes)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise JsonRejected("invalid", f"body is not valid JSON: not UTF-8: {error}") from error
    else:
        text = data
        # A character is at least one UTF-8 byte: the length alone rejects most oversized
        # bodies before anything is copied.
        if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
            raise _too_large(max_bytes)
    # Fewer opening brackets than the limit cannot nest deeper than it: skip the scan.
    if text.count("[") + text.count("{") > max_depth and nesting_depth(text) > max_depth:
        raise JsonRejected("too_deep", f"body is nested deeper than {max_depth} levels")
    try:
        return _DECODER.decode(text)
    except JsonRejected:
        raise
    except RecursionError as error:  # unreachable after the depth check; kept as a backstop
        raise JsonRejected("too_deep", "body is nested too deeply to parse") from error
    except ValueError as error:
        raise JsonRejected("invalid", f"body is not valid JSON: {error}") from error
