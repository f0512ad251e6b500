"""An index definition as Azure AI Search reads it: fields, their types and attributes, the vector
profiles; checked the way the service checks it, with its error wording. Also the errors the
Search routes answer with (Azure Search's body: ``{"error": {"code": "", "message": ...}}``).

No I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from emulators.errors import EmulatorError

# Types the emulator stores, filters and sorts; Azure has more (geography, complex types).
SCALAR_TYPES = {
    "Edm.String",
    "Edm.Int32",
    "Edm.Int64",
    "Edm.Double",
    "Edm.Boolean",
    "Edm.DateTimeOffset",
}
VECTOR_ELEMENT_TYPES = {"Edm.Single", "Edm.Half", "Edm.Int16", "Edm.SByte", "Edm.Byte"}
# Azure's rules for names: an index name is lower-case letters, digits and dashes, up to 128.
INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,126}[a-z0-9]$")
FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")
# Azure's limit on a vector field's dimensions.
MAX_VECTOR_DIMENSIONS = 4096


class SearchError(EmulatorError):
    """An error in Azure AI Search's body shape (its ``code`` is usually empty)."""

    code = ""


class SearchRequestError(SearchError):
    status = 400


class SearchUnauthorized(SearchError):
    """401 when no key was presented, 403 when the key is wrong (as the service answers)."""

    def __init__(self, presented: bool) -> None:
        super().__init__(
            "Authentication failed: the api-key header is "
            + ("wrong" if presented else "missing")
            + " (Emulator: EMULATOR_API_KEY when set, else any non-empty key)."
        )
        self.status = 403 if presented else 401


class SearchNotFound(SearchError):
    status = 404


class SearchPayloadTooLarge(SearchError):
    status = 413


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    key: bool = False
    searchable: bool = False
    filterable: bool = False
    sortable: bool = False
    retrievable: bool = True
    dimensions: int | None = None

    @property
    def is_collection(self) -> bool:
        return self.type.startswith("Collection(")

    @property
    def element_type(self) -> str:
        return self.type[len("Collection(") : -1] if self.is_collection else self.type

    @property
    def is_vector(self) -> bool:
        return self.dimensions is not None

    @property
    def is_text(self) -> bool:
        return self.searchable and self.element_type == "Edm.String"


def _field(body: Any, profiles: set[str]) -> Field:
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise SearchRequestError("Every field must be an object with a 'name'.")
    name, kind = body["name"], body.get("type")
    if not FIELD_NAME.match(name):
        raise SearchRequestError(
            f"The field name '{name}' is invalid: it must start with a letter and contain only "
            "letters, digits and underscores."
        )
    if not isinstance(kind, str):
        raise SearchRequestError(f"The field '{name}' has no 'type'.")
    element = kind[len("Collection(") : -1] if kind.startswith("Collection(") else kind
    dimensions = body.get("dimensions")
    if dimensions is not None or element in VECTOR_ELEMENT_TYPES:
        if not kind.startswith("Collection(") or element not in VECTOR_ELEMENT_TYPES:
            raise SearchRequestError(
                f"The vector field '{name}' must be of type Collection(Edm.Single)."
            )
        if not isinstance(dimensions, int) or not 2 <= dimensions <= MAX_VECTOR_DIMENSIONS:
            raise SearchRequestError(
                f"The vector field '{name}' must set 'dimensions' between 2 and "
                f"{MAX_VECTOR_DIMENSIONS}."
            )
        profile = body.get("vectorSearchProfile")
        if profile not in profiles:
            raise SearchRequestError(
                f"The vector field '{name}' must name a vector search profile defined in the "
                f"index's 'vectorSearch' section; '{profile}' is not one."
            )
        return Field(
            name, kind, searchable=True, retrievable=_retrievable(body), dimensions=dimensions
        )
    if element not in SCALAR_TYPES:
        raise SearchRequestError(
            f"The type '{kind}' of field '{name}' is not supported by the Conduit Search "
            f"emulator (supported: {', '.join(sorted(SCALAR_TYPES))}, their collections, and "
            "vector fields)."
        )
    searchable = bool(body.get("searchable", element == "Edm.String"))
    if searchable and element != "Edm.String":
        raise SearchRequestError(
            f"The field '{name}' of type '{kind}' cannot be searchable: only Edm.String and "
            "Collection(Edm.String) fields can."
        )
    return Field(
        name=name,
        type=kind,
        key=bool(body.get("key", False)),
        searchable=searchable,
        filterable=bool(body.get("filterable", True)),
        sortable=bool(body.get("sortable", not kind.startswith("Collection("))),
        retrievable=_retrievable(body),
    )


def _retrievable(body: dict[str, Any]) -> bool:
    if body.get("hidden") is not None:
        return not body["hidden"]
    return bool(body.get("retrievable", True))


@dataclass(frozen=True)
class IndexSchema:
    name: str
    fields: tuple[Field, ...]
    definition: dict[str, Any]

    @property
    def key(self) -> Field:
        return next(field for field in self.fields if field.key)

    def field(self, name: str) -> Field | None:
        return next((field for field in self.fields if field.name == name), None)

    @property
    def text_fields(self) -> list[Field]:
        return [field for field in self.fields if field.is_text]

    @property
    def vector_fields(self) -> list[Field]:
        return [field for field in self.fields if field.is_vector]


def parse_index(body: Any, name_in_path: str | None = None) -> IndexSchema:
    """The index a create/update request defines, or SearchRequestError in Azure's words."""
    if not isinstance(body, dict):
        raise SearchRequestError("The request body must be a JSON object defining an index.")
    name = body.get("name")
    if name_in_path is not None and name is not None and name != name_in_path:
        raise SearchRequestError(
            f"The index name '{name}' in the body does not match '{name_in_path}' in the URL."
        )
    name = name or name_in_path
    if not isinstance(name, str) or not INDEX_NAME.match(name):
        raise SearchRequestError(
            f"Index name '{name}' is invalid: it must be 2 to 128 lower-case letters, digits or "
            "dashes, starting and ending with a letter or digit."
        )
    vector_search = body.get("vectorSearch") or {}
    profiles = {profile.get("name") for profile in vector_search.get("profiles") or [] if profile}
    raw_fields = body.get("fields")
    if not isinstance(raw_fields, list) or not raw_fields:
        raise SearchRequestError("The index must define at least one field.")
    fields = tuple(_field(item, profiles) for item in raw_fields)
    names = [field.name for field in fields]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise SearchRequestError(f"The field '{sorted(duplicates)[0]}' is defined twice.")
    keys = [field for field in fields if field.key]
    if len(keys) != 1 or keys[0].type != "Edm.String":
        raise SearchRequestError("The index must have exactly one key field, of type Edm.String.")
    definition = {**body, "name": name}
    return IndexSchema(name, fields, definition)


def check_update(existing: IndexSchema, updated: IndexSchema) -> None:
    """Azure adds fields to an index in place but refuses to change or remove existing ones."""
    for field in existing.fields:
        new = updated.field(field.name)
        if new is None:
            raise SearchRequestError(
                f"Existing field '{field.name}' cannot be removed from index '{existing.name}'."
            )
        if new != field:
            raise SearchRequestError(
                f"Existing field '{field.name}' cannot be changed. (Index '{existing.name}'.)"
            )


def _is_datetime(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_FITS = {
    "Edm.String": lambda value: isinstance(value, str),
    "Edm.Int32": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "Edm.Int64": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "Edm.Double": _is_number,
    "Edm.Single": _is_number,
    "Edm.Boolean": lambda value: isinstance(value, bool),
    "Edm.DateTimeOffset": _is_datetime,
}


def _fits(edm_type: str, value: Any) -> bool:
    return _FITS.get(edm_type, lambda _value: True)(value)


def check_value(field: Field, value: Any) -> None:
    """A document's value for ``field`` has the field's type (null is always allowed), or
    SearchRequestError in the service's words; vectors must have the field's dimensions."""
    if value is None:
        return
    if field.is_vector:
        if not isinstance(value, list) or len(value) != field.dimensions:
            length = len(value) if isinstance(value, list) else "no"
            raise SearchRequestError(
                f"The vector field '{field.name}' must have {field.dimensions} dimensions; "
                f"this document's has {length}."
            )
        if not all(_fits("Edm.Single", item) for item in value):
            raise SearchRequestError(f"The vector field '{field.name}' must hold only numbers.")
        return
    items = value if field.is_collection else [value]
    if (field.is_collection and not isinstance(value, list)) or not all(
        _fits(field.element_type, item) for item in items
    ):
        shown = str(value)[:100]
        raise SearchRequestError(
            f"The request is invalid. Details: Cannot convert the literal '{shown}' to the "
            f"expected type '{field.type}' of field '{field.name}'."
        )
