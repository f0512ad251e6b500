"""Make up a JSON value that validates against a JSON Schema, the way structured outputs must.

Covers what OpenAI's structured outputs accept (and what pydantic emits for them): objects with
``properties``/``required``/``additionalProperties``, arrays with ``minItems``/``maxItems``,
strings with ``enum``/``const``/``minLength``/``maxLength``/``format``, numbers and integers with
``minimum``/``maximum`` (exclusive too) and ``multipleOf``, booleans, null, ``anyOf``/``oneOf``/
``allOf``, ``$ref`` into ``$defs``/``definitions``, and ``type`` lists. Values come from the
caller's ``random.Random``, so the same seed fills the same value.

No I/O: pure functions of a schema and a random source.
"""

from __future__ import annotations

import math
import random
from typing import Any

# Recursive schemas (a tree node holding nodes) stop growing past this depth.
MAX_DEPTH = 6
# Arrays without maxItems get up to this many items: enough to look like data, short to read.
DEFAULT_MAX_ITEMS = 3
_WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()
_FORMATTED = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "hostname": "example.com",
}


class SchemaFillError(ValueError):
    """The schema asks for something no value can satisfy, or uses an unresolvable $ref."""


def fill(schema: dict[str, Any], rng: random.Random) -> Any:
    """A value valid for ``schema``; ``$ref`` resolves against the schema's own root."""
    return _Filler(schema, rng).value(schema, depth=0)


class _Filler:
    def __init__(self, root: dict[str, Any], rng: random.Random) -> None:
        self.root, self.rng = root, rng

    def value(self, schema: dict[str, Any] | bool, depth: int) -> Any:
        if schema is False:
            raise SchemaFillError("a schema of `false` admits no value")
        if schema is True:
            schema = {}
        if "$ref" in schema:
            return self.value(self._resolve(schema["$ref"]), depth + 1)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self.rng.choice(schema["enum"])
        if "allOf" in schema:
            return self.value(self._merge(schema), depth + 1)
        branches = schema.get("anyOf") or schema.get("oneOf")
        if branches:
            return self.value(self._choose_branch(branches, depth), depth + 1)
        kind = schema.get("type", self._implied_type(schema))
        if isinstance(kind, list):
            kind = self._choose_type(kind, depth)
        fillers = {
            "object": self._object,
            "array": self._array,
            "string": self._string,
            "integer": self._integer,
            "number": self._number,
            "boolean": self._boolean,
            "null": self._null,
        }
        if kind not in fillers:
            raise SchemaFillError(f"unknown JSON Schema type {kind!r}")
        return fillers[kind](schema, depth)

    def _merge(self, schema: dict[str, Any]) -> dict[str, Any]:
        merged = {key: value for key, value in schema.items() if key != "allOf"}
        for part in schema["allOf"]:
            merged |= self._resolve(part["$ref"]) if "$ref" in part else part
        return merged

    @staticmethod
    def _implied_type(schema: dict[str, Any]) -> str:
        if "properties" in schema:
            return "object"
        if "items" in schema:
            return "array"
        return "string"

    def _choose_branch(self, branches: list[dict[str, Any]], depth: int) -> dict[str, Any]:
        # Deep in a recursive schema, prefer the branch that ends the recursion (null, a leaf).
        if depth >= MAX_DEPTH:
            for branch in branches:
                if branch.get("type") == "null":
                    return branch
        non_null = [branch for branch in branches if branch.get("type") != "null"]
        return self.rng.choice(non_null or branches)

    def _choose_type(self, kinds: list[str], depth: int) -> str:
        if depth >= MAX_DEPTH and "null" in kinds:
            return "null"
        return self.rng.choice([kind for kind in kinds if kind != "null"] or kinds)

    def _resolve(self, reference: str) -> dict[str, Any]:
        if not reference.startswith("#"):
            raise SchemaFillError(f"only local $ref are supported, not {reference!r}")
        target: Any = self.root
        for part in filter(None, reference.lstrip("#/").split("/")):
            key = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or key not in target:
                raise SchemaFillError(f"$ref {reference!r} points nowhere in the schema")
            target = target[key]
        return target

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", properties))
        result = {}
        for name, subschema in properties.items():
            # Optional properties are filled too, except where recursion must stop.
            if name in required or depth < MAX_DEPTH:
                result[name] = self.value(subschema, depth + 1)
        return result

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        low = schema.get("minItems", 0 if depth >= MAX_DEPTH else 1)
        high = schema.get("maxItems", max(low, DEFAULT_MAX_ITEMS))
        count = low if depth >= MAX_DEPTH else self.rng.randint(low, max(low, high))
        prefix = schema.get("prefixItems", [])
        items = schema.get("items", {})
        values = [
            self.value(prefix[i] if i < len(prefix) else items, depth + 1) for i in range(count)
        ]
        if schema.get("uniqueItems") and len({repr(v) for v in values}) < len(values):
            raise SchemaFillError("cannot make unique array items from this schema")
        return values

    def _string(self, schema: dict[str, Any], _depth: int) -> str:
        if schema.get("format") in _FORMATTED:
            return _FORMATTED[schema["format"]]
        low = schema.get("minLength", 0)
        high = schema.get("maxLength", max(low, 40))
        if low > high:
            raise SchemaFillError(f"minLength {low} exceeds maxLength {high}")
        words: list[str] = []
        target = self.rng.randint(max(low, 1), max(low, min(high, 24)))
        while len(" ".join(words)) < target:
            words.append(self.rng.choice(_WORDS))
        return " ".join(words)[:high]

    def _integer(self, schema: dict[str, Any], _depth: int) -> int:
        low, high = self._bounds(schema, step=1)
        return int(
            self._multiple_between(math.ceil(low), math.floor(high), schema.get("multipleOf", 1))
        )

    def _number(self, schema: dict[str, Any], _depth: int) -> float:
        if "multipleOf" in schema:
            low, high = self._bounds(schema, step=schema["multipleOf"])
            return float(self._multiple_between(low, high, schema["multipleOf"]))
        low, high = self._bounds(schema, step=1e-6)
        return round(self.rng.uniform(low, high), 4) if high - low > 1e-3 else low

    def _boolean(self, _schema: dict[str, Any], _depth: int) -> bool:
        return self.rng.random() < 0.5

    @staticmethod
    def _null(_schema: dict[str, Any], _depth: int) -> None:
        return None

    def _multiple_between(self, low: float, high: float, multiple: float) -> float:
        first = math.ceil(low / multiple) * multiple
        if first > high:
            raise SchemaFillError(f"no multiple of {multiple} lies in [{low}, {high}]")
        steps = self.rng.randint(0, int((high - first) // multiple))
        # Rounded so 0.1 * 3 is 0.3, which validators accept as a multiple of 0.1.
        return round(first + multiple * steps, 10)

    @staticmethod
    def _bounds(schema: dict[str, Any], step: float) -> tuple[float, float]:
        """Inclusive bounds, exclusive ones moved inward by ``step``; unbounded → 0..100."""
        low = schema.get("minimum")
        high = schema.get("maximum")
        if "exclusiveMinimum" in schema:
            low = schema["exclusiveMinimum"] + step
        if "exclusiveMaximum" in schema:
            high = schema["exclusiveMaximum"] - step
        if low is None:
            low = min(0, high - 100) if high is not None else 0
        if high is None:
            high = low + 100
        if low > high:
            raise SchemaFillError(f"minimum {low} exceeds maximum {high}")
        return low, high
