"""OData for Azure AI Search: ``$filter`` and ``$orderby`` parsed and checked against the index.

The ``$filter`` subset: comparisons (``eq ne gt ge lt le``) between a field and a constant
(string, number, ``true``/``false``, ``null``, an ISO date-time), ``and``/``or``/``not``,
parentheses, a boolean field on its own, ``search.in(field, 'a,b' [, 'delimiters'])``, and
``any``/``all`` over collection fields (``tags/any(t: t eq 'x')``, ``tags/any()``). Anything else
(``geo.distance``, ``search.ismatch``, arithmetic, complex-field paths) is refused with Azure's
400 wording naming what is unsupported, so code never silently gets a different answer here
than from Azure.

A filter compiles to a predicate over a stored document (a dict of field values).

No I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from emulators.search.schema import Field, IndexSchema, SearchRequestError

Predicate = Callable[[dict[str, Any], dict[str, Any]], bool]
Operand = Callable[[dict[str, Any], dict[str, Any]], Any]

COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}
# Azure: at most 32 $orderby clauses.
MAX_ORDER_BY_CLAUSES = 32
_OPERATOR_KIND = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^']|'')*')
    | (?P<datetime>\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    | (?P<punct>[()/,:])
    )""",
    re.VERBOSE,
)
_NUMERIC = {"Edm.Int32", "Edm.Int64", "Edm.Double"}


def _invalid(message: str, parameter: str = "$filter") -> SearchRequestError:
    return SearchRequestError(f"Invalid expression: {message}\r\nParameter name: {parameter}")


@dataclass(frozen=True)
class Token:
    kind: str  # string, datetime, number, name, punct, end
    text: str
    position: int


def tokenize(text: str, parameter: str = "$filter") -> list[Token]:
    tokens, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise _invalid(f"Syntax error at position {position} in '{text}'.", parameter)
        kind = match.lastgroup or "punct"
        tokens.append(Token(kind, match.group(kind), match.start(kind)))
        position = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


@dataclass(frozen=True)
class _Value:
    """A compiled operand: how to get it, and its EDM type when known (for type checks)."""

    get: Operand
    edm_type: str | None
    field: Field | None = None
    is_constant: bool = False


class _FilterParser:
    def __init__(self, text: str, schema: IndexSchema) -> None:
        self.text, self.schema = text, schema
        self.tokens = tokenize(text)
        self.position = 0
        self.variables: dict[str, Field] = {}

    # --- token helpers ---
    @property
    def token(self) -> Token:
        return self.tokens[self.position]

    def _syntax_error(self) -> SearchRequestError:
        return _invalid(f"Syntax error at position {self.token.position} in '{self.text}'.")

    def _take(self, text: str | None = None, kind: str | None = None) -> Token:
        token = self.token
        if (text is not None and token.text != text) or (kind is not None and token.kind != kind):
            raise self._syntax_error()
        self.position += 1
        return token

    def _at_keyword(self, word: str) -> bool:
        return self.token.kind == "name" and self.token.text == word

    # --- grammar ---
    def parse(self) -> Predicate:
        predicate = self._or()
        if self.token.kind != "end":
            raise self._syntax_error()
        return predicate

    def _or(self) -> Predicate:
        left = self._and()
        while self._at_keyword("or"):
            self.position += 1
            right = self._and()
            left = _either(left, right)
        return left

    def _and(self) -> Predicate:
        left = self._unary()
        while self._at_keyword("and"):
            self.position += 1
            right = self._unary()
            left = _both(left, right)
        return left

    def _unary(self) -> Predicate:
        if self._at_keyword("not"):
            self.position += 1
            inner = self._unary()
            return lambda d, v: not inner(d, v)
        return self._comparison()

    def _comparison(self) -> Predicate:
        if self.token.text == "(":
            self.position += 1
            inner = self._or()
            self._take(")")
            return inner
        left = self._operand()
        if isinstance(left, _Predicate):
            return left.predicate
        if self.token.kind == "name" and self.token.text in COMPARISONS:
            operator = self._take().text
            right = self._operand()
            if isinstance(right, _Predicate):
                raise self._syntax_error()
            return self._compare(left, operator, right)
        if self.token.kind == "name" and self.token.text in {"add", "sub", "mul", "div", "mod"}:
            raise _invalid(
                f"The arithmetic operator '{self.token.text}' is not supported in filters."
            )
        if left.edm_type == "Edm.Boolean" and not left.is_constant:
            return lambda d, v: left.get(d, v) is True
        if left.is_constant and left.edm_type == "Edm.Boolean":
            constant = left.get({}, {})
            return lambda d, v: constant
        raise _invalid(
            f"The expression at position {self.token.position} in '{self.text}' is not a "
            "boolean expression."
        )

    def _compare(self, left: _Value, operator: str, right: _Value) -> Predicate:
        self._check_types(left, operator, right)
        test = _COMPARE[operator]
        return lambda d, v: test(left.get(d, v), right.get(d, v))

    def _check_types(self, left: _Value, operator: str, right: _Value) -> None:
        kinds = [value.edm_type for value in (left, right)]
        if None in kinds or "null" in kinds or kinds[0] == kinds[1]:
            return
        if set(kinds) <= _NUMERIC:
            return
        raise _invalid(
            "A binary operator with incompatible types was detected. Found operand types "
            f"'{kinds[0]}' and '{kinds[1]}' for operator kind '{_OPERATOR_KIND[operator]}'."
        )

    def _operand(self) -> _Value | _Predicate:  # noqa: PLR0911 - one answer per kind of token
        token = self.token
        if token.kind == "string":
            self.position += 1
            text = token.text[1:-1].replace("''", "'")
            return _Value(lambda d, v: text, "Edm.String", is_constant=True)
        if token.kind == "number":
            self.position += 1
            number: float | int = (
                float(token.text) if any(c in token.text for c in ".eE") else int(token.text)
            )
            edm = "Edm.Double" if isinstance(number, float) else "Edm.Int32"
            return _Value(lambda d, v: number, edm, is_constant=True)
        if token.kind == "datetime":
            self.position += 1
            moment = _datetime(token.text)
            return _Value(lambda d, v: moment, "Edm.DateTimeOffset", is_constant=True)
        if token.kind != "name":
            raise self._syntax_error()
        if token.text in {"true", "false"}:
            self.position += 1
            flag = token.text == "true"
            return _Value(lambda d, v: flag, "Edm.Boolean", is_constant=True)
        if token.text == "null":
            self.position += 1
            return _Value(lambda d, v: None, "null", is_constant=True)
        if token.text in {"NaN", "INF", "-INF"}:
            self.position += 1
            special = {"NaN": math.nan, "INF": math.inf, "-INF": -math.inf}[token.text]
            return _Value(lambda d, v: special, "Edm.Double", is_constant=True)
        if self.tokens[self.position + 1].text == "(":
            return self._function()
        return self._path()

    def _function(self) -> _Predicate:
        name = self._take(kind="name").text
        if name != "search.in":
            raise _invalid(
                f"The function '{name}' is not supported by the Conduit Search emulator "
                "(supported in $filter: search.in, any, all)."
            )
        self._take("(")
        target = self._operand()
        if isinstance(target, _Predicate) or target.is_constant:
            raise _invalid("The first argument of search.in must be a field or range variable.")
        self._take(",")
        values_text = self._take(kind="string").text[1:-1].replace("''", "'")
        delimiters = " ,"
        if self.token.text == ",":
            self.position += 1
            delimiters = self._take(kind="string").text[1:-1].replace("''", "'")
        self._take(")")
        pattern = "[" + re.escape(delimiters) + "]+"
        values = {value for value in re.split(pattern, values_text) if value}
        return _Predicate(lambda d, v: target.get(d, v) in values)

    def _path(self) -> _Value | _Predicate:
        name = self._take(kind="name").text
        if name in self.variables:
            element = self.variables[name]
            return _Value(lambda d, v: v.get(name), element.element_type, element)
        field = self._filterable(name)
        if self.token.text == "/":
            self.position += 1
            quantifier = self._take(kind="name").text
            if quantifier not in {"any", "all"}:
                raise _invalid(
                    f"'{name}/{quantifier}': paths into complex fields are not supported by the "
                    "Conduit Search emulator; only any() and all() over collections are."
                )
            return self._lambda(field, quantifier)
        return _Value(lambda d, v: d.get(name), field.type, field)

    def _lambda(self, field: Field, quantifier: str) -> _Predicate:
        if not field.is_collection:
            raise _invalid(
                f"The '{quantifier}' operator can only be applied to collection fields; "
                f"'{field.name}' is of type '{field.type}'."
            )
        self._take("(")
        name = field.name
        if self.token.text == ")":
            self.position += 1
            if quantifier == "all":
                raise self._syntax_error()
            return _Predicate(lambda d, v: bool(d.get(name)))
        variable = self._take(kind="name").text
        self._take(":")
        self.variables[variable] = field
        body = self._or()
        del self.variables[variable]
        self._take(")")
        combine = any if quantifier == "any" else all

        def predicate(d: dict[str, Any], v: dict[str, Any]) -> bool:
            items = d.get(name) or []
            return combine(body(d, {**v, variable: item}) for item in items)

        return _Predicate(predicate)

    def _filterable(self, name: str) -> Field:
        field = self.schema.field(name)
        if field is None:
            raise _invalid(f"Could not find a property named '{name}' on type 'search.document'.")
        if not field.filterable:
            raise _invalid(
                f"'{name}' is not a filterable field. Only filterable fields can be used in "
                "filter expressions."
            )
        return field


def _either(left: Predicate, right: Predicate) -> Predicate:
    return lambda d, v: left(d, v) or right(d, v)


def _both(left: Predicate, right: Predicate) -> Predicate:
    return lambda d, v: left(d, v) and right(d, v)


@dataclass(frozen=True)
class _Predicate:
    predicate: Predicate


def _aware(moment: datetime) -> datetime:
    # A time without an offset is UTC, so it compares with ones that have one.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _datetime(text: str) -> datetime:
    try:
        return _aware(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise _invalid(f"'{text}' is not a valid DateTimeOffset literal.") from None


def comparable(value: Any) -> Any:
    """A value as filters and sorting compare it: ISO date-time strings as UTC-aware instants."""
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and "T" in value:
        try:
            return _aware(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return value
    return value


def _ordered(test: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(left: Any, right: Any) -> bool:
        # OData: an ordering comparison with null is false.
        if left is None or right is None:
            return False
        left, right = comparable(left), comparable(right)
        if isinstance(left, datetime) != isinstance(right, datetime):
            return False
        return test(left, right)

    return compare


def _equal(left: Any, right: Any) -> bool:
    return comparable(left) == comparable(right)


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": _equal,
    "ne": lambda left, right: not _equal(left, right),
    "gt": _ordered(lambda left, right: left > right),
    "ge": _ordered(lambda left, right: left >= right),
    "lt": _ordered(lambda left, right: left < right),
    "le": _ordered(lambda left, right: left <= right),
}


def compile_filter(text: str, schema: IndexSchema) -> Callable[[dict[str, Any]], bool]:
    """A predicate over stored documents for the ``$filter`` ``text``, or SearchRequestError."""
    predicate = _FilterParser(text, schema).parse()
    return lambda document: bool(predicate(document, {}))


@dataclass(frozen=True)
class OrderClause:
    field: str | None  # None: search.score()
    descending: bool


def split_clauses(text: str) -> list[str]:
    """``$orderby``'s comma-separated clauses; commas inside a function's parentheses stay."""
    clauses, depth, start = [], 0, 0
    for position, character in enumerate(text):
        depth += {"(": 1, ")": -1}.get(character, 0)
        if character == "," and depth == 0:
            clauses.append(text[start:position])
            start = position + 1
    clauses.append(text[start:])
    return [clause.strip() for clause in clauses if clause.strip()]


def parse_order_by(items: list[str], schema: IndexSchema) -> list[OrderClause]:
    """``$orderby`` clauses: sortable fields or ``search.score()``, each ``asc`` or ``desc``."""
    clauses = []
    for item in items:
        match = re.fullmatch(r"\s*(.+?)(?:\s+(asc|desc))?\s*", item)
        if match is None:
            raise _invalid(f"Syntax error in '{item.strip()}'.", "$orderby")
        target, descending = match.group(1), match.group(2) == "desc"
        if target == "search.score()":
            clauses.append(OrderClause(None, descending))
            continue
        if "(" in target:
            raise _invalid(
                f"The function '{target.split('(')[0]}' is not supported in $orderby by the "
                "Conduit Search emulator (supported: fields and search.score()).",
                "$orderby",
            )
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", target):
            raise _invalid(f"Syntax error in '{item.strip()}'.", "$orderby")
        field = schema.field(target)
        if field is None:
            raise _invalid(
                f"Could not find a property named '{target}' on type 'search.document'.",
                "$orderby",
            )
        if not field.sortable:
            raise _invalid(
                f"'{target}' is not a sortable field. Only sortable fields can be used in "
                "$orderby expressions.",
                "$orderby",
            )
        clauses.append(OrderClause(target, descending))
    if len(clauses) > MAX_ORDER_BY_CLAUSES:
        raise _invalid(
            f"There are too many $orderby clauses; at most {MAX_ORDER_BY_CLAUSES} are allowed.",
            "$orderby",
        )
    return clauses
