"""The Search emulator's sans-I/O parts: OData $filter/$orderby, the query syntax, RRF."""

from __future__ import annotations

import pytest

from emulators.search.odata import compile_filter, parse_order_by, split_clauses
from emulators.search.query import fuse, parse_request, run_search
from emulators.search.schema import SearchRequestError, check_update, check_value, parse_index
from emulators.search.store import IndexStore, fts_query

INDEX = {
    "name": "hotels",
    "fields": [
        {"name": "id", "type": "Edm.String", "key": True, "filterable": True},
        {"name": "name", "type": "Edm.String", "searchable": True, "filterable": True},
        {"name": "rating", "type": "Edm.Int32", "filterable": True, "sortable": True},
        {"name": "price", "type": "Edm.Double", "filterable": True, "sortable": True},
        {"name": "open", "type": "Edm.Boolean", "filterable": True},
        {"name": "opened", "type": "Edm.DateTimeOffset", "filterable": True, "sortable": True},
        {"name": "tags", "type": "Collection(Edm.String)", "filterable": True},
        {"name": "notes", "type": "Edm.String", "searchable": True, "filterable": False},
    ],
}
SCHEMA = parse_index(INDEX)
DOCS = [
    {
        "id": "a",
        "name": "Alpine Lodge",
        "rating": 5,
        "price": 250.0,
        "open": True,
        "opened": "2020-05-01T00:00:00Z",
        "tags": ["pool", "spa"],
    },
    {
        "id": "b",
        "name": "Budget Inn",
        "rating": 2,
        "price": 60.5,
        "open": False,
        "opened": "2015-01-01T00:00:00Z",
        "tags": [],
    },
    {
        "id": "c",
        "name": "O'Brien's",
        "rating": 3,
        "price": None,
        "open": True,
        "opened": None,
        "tags": ["bar"],
    },
]


def matching(expression: str) -> list[str]:
    keep = compile_filter(expression, SCHEMA)
    return [doc["id"] for doc in DOCS if keep(doc)]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("rating eq 5", ["a"]),
        ("rating ne 5", ["b", "c"]),
        ("rating gt 2 and rating le 5", ["a", "c"]),
        ("rating lt 3 or name eq 'Alpine Lodge'", ["a", "b"]),
        ("not (rating ge 3)", ["b"]),
        ("price ge 60.5", ["a", "b"]),
        ("price eq null", ["c"]),
        ("price ne null and price lt 100", ["b"]),
        ("open", ["a", "c"]),
        ("not open", ["b"]),
        ("open eq false", ["b"]),
        ("name eq 'O''Brien''s'", ["c"]),
        ("opened gt 2018-01-01T00:00:00Z", ["a"]),
        ("opened lt 2016-01-01T00:00:00", ["b"]),  # no offset: UTC
        ("search.in(id, 'a, c')", ["a", "c"]),
        ("search.in(name, 'Budget Inn|Alpine Lodge', '|')", ["a", "b"]),
        ("tags/any(t: t eq 'spa')", ["a"]),
        ("tags/any()", ["a", "c"]),
        ("not tags/any()", ["b"]),
        ("tags/all(t: t ne 'bar')", ["a", "b"]),
        ("tags/any(t: search.in(t, 'bar,pool'))", ["a", "c"]),
        ("(rating eq 2 or rating eq 3) and open", ["c"]),
    ],
)
def test_filters_select_what_azure_would(expression, expected):
    assert matching(expression) == expected


@pytest.mark.parametrize(
    ("expression", "named"),
    [
        ("geo.distance(location, geography'POINT(0 0)') le 10", "geo.distance"),
        ("search.ismatch('lodge')", "search.ismatch"),
        ("rating add 1 eq 6", "arithmetic operator 'add'"),
        ("tags/first eq 'x'", "paths into complex fields are not supported"),
        ("colour eq 'red'", "Could not find a property named 'colour'"),
        ("notes eq 'x'", "'notes' is not a filterable field"),
        ("rating eq 'five'", "incompatible types"),
        ("rating eq", "Syntax error"),
        ("rating eq 5 )", "Syntax error"),
        ("name eq 'unterminated", "Syntax error"),
        ("name/any(t: t eq 'x')", "only be applied to collection fields"),
    ],
)
def test_unsupported_or_wrong_filters_are_refused_naming_the_problem(expression, named):
    with pytest.raises(SearchRequestError) as refused:
        compile_filter(expression, SCHEMA)
    assert refused.value.status == 400
    assert named in refused.value.message
    assert refused.value.message.startswith("Invalid expression: ")
    assert refused.value.message.endswith("Parameter name: $filter")
    assert refused.value.body() == {"error": {"code": "", "message": refused.value.message}}


def test_order_by_accepts_sortable_fields_and_the_score_only():
    assert split_clauses("rating desc, geo.distance(a, b) asc,id") == [
        "rating desc",
        "geo.distance(a, b) asc",
        "id",
    ]
    clauses = parse_order_by(["rating desc", "search.score()", "price asc"], SCHEMA)
    assert [(c.field, c.descending) for c in clauses] == [
        ("rating", True),
        (None, False),
        ("price", False),
    ]
    for bad, named in [
        ("tags desc", "'tags' is not a sortable field"),
        ("geo.distance(location, x)", "'geo.distance' is not supported"),
        ("rating sideways", "Syntax error"),
    ]:
        with pytest.raises(SearchRequestError, match=named):
            parse_order_by([bad], SCHEMA)


def test_simple_query_syntax_becomes_a_safe_fts5_expression():
    assert fts_query("*", "any") is None
    assert fts_query("", "any") is None
    assert fts_query("solar panel", "any") == '("solar" OR "panel")'
    assert fts_query("solar panel", "all") == '"solar" AND "panel"'
    assert fts_query('+solar "heat pump" -gas', "any") == '("solar" AND ("heat pump")) NOT ("gas")'
    assert fts_query("instal*", "any") == '("instal"*)'
    # FTS5 operators in the input are words, not operators.
    assert fts_query('NEAR(a b) OR "x', "any") == '("NEAR a" OR "b" OR "OR" OR "x")'


def test_reciprocal_rank_fusion_sums_one_over_sixty_plus_rank():
    fused = dict(fuse([[("a", 9.0), ("c", 5.0)], [("b", 0.9), ("c", 0.8), ("d", 0.1)]]))
    assert fused["c"] == pytest.approx(1 / 62 + 1 / 62)
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["d"] == pytest.approx(1 / 63)
    assert max(fused, key=fused.__getitem__) == "c"
    weighted = dict(fuse([[("a", 9.0)], [("b", 0.9)]], [1.0, 2.0]))
    assert weighted == {"a": pytest.approx(1 / 61), "b": pytest.approx(2 / 61)}


def test_an_index_update_may_add_fields_but_not_change_them():
    added = parse_index(
        {**INDEX, "fields": [*INDEX["fields"], {"name": "city", "type": "Edm.String"}]}
    )
    check_update(SCHEMA, added)
    changed = parse_index(
        {
            **INDEX,
            "fields": [
                {**field, "sortable": True} if field["name"] == "tags" else field
                for field in INDEX["fields"]
            ],
        }
    )
    with pytest.raises(SearchRequestError, match="Existing field 'tags' cannot be changed"):
        check_update(SCHEMA, changed)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"name": "Bad_Name"}, "Index name 'Bad_Name' is invalid"),
        ({"fields": [{"name": "x", "type": "Edm.String"}]}, "exactly one key field"),
        (
            {"fields": [*INDEX["fields"], {"name": "geo", "type": "Edm.GeographyPoint"}]},
            "'Edm.GeographyPoint' of field 'geo' is not supported",
        ),
        (
            {
                "fields": [
                    *INDEX["fields"],
                    {"name": "v", "type": "Collection(Edm.Single)", "dimensions": 3},
                ]
            },
            "must name a vector search profile",
        ),
    ],
)
def test_index_definitions_are_checked_as_azure_checks_them(change, named):
    with pytest.raises(SearchRequestError, match=named):
        parse_index({**INDEX, **change})


@pytest.mark.parametrize(
    ("name", "value", "fits"),
    [
        ("rating", 5, True),
        ("rating", "five", False),
        ("rating", True, False),
        ("price", 2, True),
        ("price", 2.5, True),
        ("open", 1, False),
        ("opened", "2024-01-02T03:04:05Z", True),
        ("opened", "yesterday", False),
        ("tags", ["a", "b"], True),
        ("tags", "a", False),
        ("tags", ["a", 1], False),
        ("name", None, True),
    ],
)
def test_document_values_must_have_their_fields_type(name, value, fits):
    field = SCHEMA.field(name)
    if fits:
        check_value(field, value)
    else:
        with pytest.raises(SearchRequestError, match="Cannot convert the literal"):
            check_value(field, value)


def test_order_by_sorts_instants_by_time_and_strings_as_text(tmp_path):
    store = IndexStore(tmp_path / "hotels.sqlite3", SCHEMA)
    store.index(
        [
            {"id": "a", "name": "2021-01-01T00:00:00Z", "opened": "2021-01-01T05:00:00+06:00"},
            {"id": "b", "name": "zebra", "opened": "2021-01-01T00:00:00Z"},
            {"id": "c", "name": "apple", "opened": None},
        ]
    )
    by_time = run_search(store, parse_request({"orderby": "opened asc", "select": "id"}))
    # 05:00 at +06:00 is 23:00 the day before in UTC: earlier than b; null sorts first.
    assert [doc["id"] for doc in by_time["value"]] == ["c", "a", "b"]
    by_name = run_search(store, parse_request({"orderby": "name desc", "select": "id"}))
    assert [doc["id"] for doc in by_name["value"]] == ["b", "c", "a"]
    store.close()
