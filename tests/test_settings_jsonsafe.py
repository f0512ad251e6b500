"""Bounded JSON parsing: what it accepts is exactly what json.loads returns; what it rejects is
rejected before anything recursive runs, with the reason."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from settings.jsonsafe import DEFAULT_MAX_DEPTH, JsonRejected, loads_bounded, nesting_depth

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(item) for item in value.values()), default=0)
    return 0


# No per-example deadline: a loaded 2-core CI machine makes wall-clock limits flaky.
@hypothesis_settings(deadline=None)
@given(json_values)
def test_nesting_depth_is_the_depth_of_the_parsed_value(value):
    text = json.dumps(value, ensure_ascii=False)
    assert nesting_depth(text) == depth(value)


# No per-example deadline: a loaded 2-core CI machine makes wall-clock limits flaky.
@hypothesis_settings(deadline=None)
@given(json_values)
def test_what_is_within_bounds_parses_as_json_loads_does(value):
    text = json.dumps(value)
    assert loads_bounded(text, max_bytes=1 << 20) == json.loads(text)


def test_brackets_inside_strings_do_not_nest():
    text = json.dumps({"a": "[[[[{{{{" * 50, "b": '\\"[[[', "c": [["x"]]})
    assert nesting_depth(text) == 3
    assert loads_bounded(text, max_bytes=4096)["c"] == [["x"]]


def test_a_kilobyte_of_nesting_is_rejected_before_anything_recurses():
    # The message of issue 10.10: valid, about 1 KB, 500 levels deep in an extra field.
    body = '{"id": "x", "extra": ' + "[" * 500 + "]" * 500 + "}"
    with pytest.raises(JsonRejected) as raised:
        loads_bounded(body, max_bytes=256 * 1024)
    assert raised.value.kind == "too_deep"
    assert str(raised.value) == f"body is nested deeper than {DEFAULT_MAX_DEPTH} levels"


def test_nesting_deeper_than_python_can_recurse_is_still_measured():
    levels = sys.getrecursionlimit() * 10
    assert nesting_depth("[" * levels + "]" * levels) == levels
    with pytest.raises(JsonRejected, match="nested deeper than 64"):
        loads_bounded("[" * levels, max_bytes=1 << 20)


def test_the_depth_limit_is_inclusive():
    assert loads_bounded("[" * 5 + "]" * 5, max_bytes=100, max_depth=5) == [[[[[]]]]]
    with pytest.raises(JsonRejected):
        loads_bounded("[" * 6 + "]" * 6, max_bytes=100, max_depth=5)


@pytest.mark.parametrize("body", ["x" * 101, "é" * 51, b"x" * 101])
def test_size_is_counted_in_utf8_bytes(body):
    with pytest.raises(JsonRejected) as raised:
        loads_bounded(body, max_bytes=100)
    assert raised.value.kind == "too_large"
    assert "limit of 100 bytes" in str(raised.value)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_not_json(constant):
    with pytest.raises(JsonRejected, match=f"body holds {constant}, which is not JSON") as raised:
        loads_bounded(f'{{"x": {constant}}}', max_bytes=100)
    assert raised.value.kind == "invalid"


@pytest.mark.parametrize("body", ["{", "nope", b"\xff\xfe", '{"a": 1} trailing'])
def test_invalid_json_is_rejected_as_a_value_error(body):
    with pytest.raises(ValueError) as raised:
        loads_bounded(body, max_bytes=100)
    assert isinstance(raised.value, JsonRejected) and raised.value.kind == "invalid"


@pytest.mark.parametrize(
    ("hostile", "expected"),
    [
        # One unterminated string of escaped quotes: the brackets after it are inside it.
        ('"' + '\\"' * 50_000 + "[" * 100, 0),
        # ... ending in a lone backslash, which escapes the first bracket.
        ('"' + '\\"' * 50_000 + "\\" + "[" * 100, 0),
        # Many short strings, then brackets outside them all.
        ('"a"' * 30_000 + "[" * 100, 100),
    ],
)
def test_quote_heavy_text_is_measured_in_one_pass(hostile, expected):
    # A scan that restarted at every quote would take minutes on these; this one, milliseconds.
    assert nesting_depth(hostile) == expected
