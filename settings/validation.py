"""One wording for a pydantic validation error, wherever Conduit reports one in a line of text.

A message the bridge dead-letters, a task that refuses its input and an emulator that refuses a
request all say what is wrong the same way: every field at fault, by its path, with pydantic's
reason. A caller that has a place for the error adds it in front (``invalid ...``, a document's
position) rather than rewording it.

No I/O and no Conduit imports, like settings/jsonsafe.py: the bridge, the tasks and the
emulators use it alike.

    >>> from pydantic import BaseModel
    >>> class Form(BaseModel):
    ...     id: str
    ...     language: str
    >>> try:
    ...     Form.model_validate({"language": 2})
    ... except ValueError as error:
    ...     print(describe_invalid_fields(error))
    field 'id': Field required; field 'language': Input should be a valid string
    >>> field_name(("tags", 0), prefix="docs[3]")
    'docs[3].tags.0'
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from pydantic import ValidationError


def field_name(loc: Sequence[int | str], prefix: str = "") -> str:
    """A field's path as it is written in messages (``a.b.0``); the whole body when empty."""
    return ".".join([prefix, *map(str, loc)] if prefix else map(str, loc)) or "body"


def describe_invalid_fields(error: ValidationError, prefix: str = "") -> str:
    """``field 'id': Field required; field 'language': ...``: every field at fault, one line.
    ``prefix`` places the fields inside something larger (``docs[3]``)."""
    return "; ".join(
        f"field {field_name(item['loc'], prefix)!r}: {item['msg']}" for item in error.errors()
    )


def string_list(value: object) -> object:
    """A list setting as an environment variable gives it: ``a, b`` or a JSON list ``["a", "b"]``
    (anything else is left for pydantic to check).

    >>> string_list("+15551234567, +15557654321"), string_list('["api://conduit"]')
    (['+15551234567', '+15557654321'], ['api://conduit'])
    """
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value
