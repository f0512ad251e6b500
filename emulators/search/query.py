"""A ``docs/search`` request run against one index: text (BM25), vector (exact cosine) or both
fused by Reciprocal Rank Fusion, then ``$filter``, ``$orderby``, ``$count``, ``$skip``, ``$top``
and ``$select``, answered in Azure's response shape.

RRF as Azure documents it: each ranking (the text matches, and each vector query's ``k``
nearest) gives a document ``1 / (60 + rank)``, rank counted from 1; a document's hybrid score is
the sum over the rankings it appears in, and results are sorted by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emulators.search.odata import (
    OrderClause,
    comparable,
    compile_filter,
    parse_order_by,
    split_clauses,
)
from emulators.search.schema import SearchRequestError
from emulators.search.store import MAX_TEXT_RECALL, IndexStore

RRF_K = 60
# Azure returns at most 50 results a page when $top is not given, and takes $top up to 1,000.
DEFAULT_PAGE_SIZE = 50
MAX_TOP = 1000
MAX_SKIP = 100_000
MAX_VECTOR_QUERIES = 10


@dataclass(frozen=True)
class SearchRequest:
    search: str | None
    search_mode: str
    search_fields: list[str] | None
    filter: str | None
    order_by: list[str]
    select: list[str] | None
    top: int | None
    skip: int
    count: bool
    vector_queries: list[dict[str, Any]]
    vector_filter_mode: str


def _names(value: Any, parameter: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list):
        value = ",".join(str(item) for item in value)
    if not isinstance(value, str):
        raise SearchRequestError(f"The parameter '{parameter}' must be a comma-separated string.")
    return [name.strip() for name in value.split(",") if name.strip()]


def _order_by(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        value = ",".join(str(item) for item in value)
    if not isinstance(value, str):
        raise SearchRequestError("The parameter '$orderby' must be a comma-separated string.")
    return split_clauses(value)


def _integer(value: Any, parameter: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SearchRequestError(f"The parameter '{parameter}' must be an integer.") from None
    if not low <= number <= high:
        raise SearchRequestError(
            f"The value of the parameter '{parameter}' must be between {low} and {high}."
        )
    return number


def parse_request(body: dict[str, Any]) -> SearchRequest:
    """The POST body (or the GET query parameters mapped to its names) as a SearchRequest."""
    search = body.get("search")
    if search is not None and not isinstance(search, str):
        raise SearchRequestError("The parameter 'search' must be a string.")
    mode = body.get("searchMode") or "any"
    if mode not in {"any", "all"}:
        raise SearchRequestError("The parameter 'searchMode' must be 'any' or 'all'.")
    query_type = body.get("queryType") or "simple"
    if query_type != "simple":
        raise SearchRequestError(
            f"queryType '{query_type}' is not supported by the Conduit Search emulator "
            "(supported: simple)."
        )
    for unsupported in ("facets", "highlight", "scoringProfile", "semanticConfiguration"):
        if body.get(unsupported):
            raise SearchRequestError(
                f"The parameter '{unsupported}' is not supported by the Conduit Search emulator."
            )
    vector_queries = body.get("vectorQueries") or []
    if not isinstance(vector_queries, list) or len(vector_queries) > MAX_VECTOR_QUERIES:
        raise SearchRequestError(
            f"'vectorQueries' must be a list of at most {MAX_VECTOR_QUERIES} queries."
        )
    filter_mode = body.get("vectorFilterMode") or "preFilter"
    if filter_mode not in {"preFilter", "postFilter"}:
        raise SearchRequestError(
            f"vectorFilterMode '{filter_mode}' is not supported by the Conduit Search emulator "
            "(supported: preFilter, postFilter)."
        )
    filter_text = body.get("filter")
    if filter_text is not None and not isinstance(filter_text, str):
        raise SearchRequestError("The parameter 'filter' must be a string.")
    count = body.get("count", False)
    if isinstance(count, str):
        count = count.lower() == "true"
    return SearchRequest(
        search=search,
        search_mode=mode,
        search_fields=_names(body.get("searchFields"), "searchFields"),
        filter=filter_text,
        order_by=_order_by(body.get("orderby")),
        select=_names(body.get("select"), "$select"),
        top=_integer(body.get("top"), "$top", 0, MAX_TOP),
        skip=_integer(body.get("skip"), "$skip", 0, MAX_SKIP) or 0,
        count=bool(count),
        vector_queries=vector_queries,
        vector_filter_mode=filter_mode,
    )


def _vector_ranking(
    store: IndexStore, query: Any, allowed: set[str] | None
) -> list[tuple[str, float]]:
    if not isinstance(query, dict) or query.get("kind", "vector") != "vector":
        kind = query.get("kind") if isinstance(query, dict) else query
        raise SearchRequestError(
            f"Vector query kind '{kind}' is not supported by the Conduit Search emulator "
            "(supported: vector; vectorize the text first)."
        )
    vector, k = query.get("vector"), query.get("k") or query.get("kNearestNeighborsCount")
    fields = _names(query.get("fields"), "fields") or []
    if not isinstance(vector, list) or not vector:
        raise SearchRequestError("A vector query must have a non-empty 'vector'.")
    k = _integer(k if k is not None else DEFAULT_PAGE_SIZE, "k", 1, MAX_TOP) or 1
    if not fields:
        raise SearchRequestError("A vector query must name the vector field(s) in 'fields'.")
    rankings = []
    for name in fields:
        field = store.schema.field(name)
        if field is None or not field.is_vector:
            raise SearchRequestError(
                f"The field '{name}' in the vector query is not a vector field of the index."
            )
        if len(vector) != field.dimensions:
            raise SearchRequestError(
                f"The vector field '{name}' has {field.dimensions} dimensions, but the query "
                f"vector has {len(vector)}."
            )
        rankings.append(store.nearest(name, vector, k, allowed))
    if len(rankings) == 1:
        return rankings[0]
    return fuse(rankings)[:k]


def _weight(query: dict[str, Any]) -> float:
    weight = query.get("weight", 1.0)
    if not isinstance(weight, (int, float)) or weight <= 0:
        raise SearchRequestError("A vector query's 'weight' must be a positive number.")
    return float(weight)


def fuse(
    rankings: list[list[tuple[str, float]]], weights: list[float] | None = None
) -> list[tuple[str, float]]:
    """Reciprocal Rank Fusion of several rankings (best first), as Azure's hybrid search does;
    a vector query's ``weight`` (default 1) multiplies its rankings' terms."""
    scores: dict[str, float] = {}
    for position, ranking in enumerate(rankings):
        weight = weights[position] if weights else 1.0
        for rank, (key, _score) in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + weight / (RRF_K + rank)
    return sorted(scores.items(), key=lambda item: -item[1])


def _sort_key(value: Any, is_datetime: bool) -> tuple[int, Any]:
    # Nulls sort first ascending, as Azure sorts them; values are checked against their field's
    # type on upload, so mixed types never meet in one field; date-times sort as instants.
    if value is None:
        return (0, 0)
    return (1, comparable(value) if is_datetime else value)


def _ordered(
    store: IndexStore, matches: list[tuple[str, float]], clauses: list[OrderClause]
) -> list[tuple[str, float]]:
    ordered = list(matches)
    # Stable sorts from the last clause to the first; the score breaks the remaining ties.
    ordered.sort(key=lambda item: -item[1])
    for clause in reversed(clauses):
        if clause.field is None:
            ordered.sort(key=lambda item: item[1], reverse=clause.descending)
        else:
            name = clause.field
            field = store.schema.field(name)
            is_datetime = field is not None and field.type == "Edm.DateTimeOffset"
            ordered.sort(
                # .get: a document deleted by another request meanwhile sorts as null.
                key=lambda item: _sort_key(store.documents.get(item[0], {}).get(name), is_datetime),
                reverse=clause.descending,
            )
    return ordered


def _projection(store: IndexStore, select: list[str] | None) -> list[str]:
    retrievable = [field.name for field in store.schema.fields if field.retrievable]
    if select is None or select == ["*"]:
        return retrievable
    for name in select:
        field = store.schema.field(name)
        if field is None:
            raise SearchRequestError(
                f"Invalid expression: Could not find a property named '{name}' on type "
                "'search.document'.\r\nParameter name: $select"
            )
        if not field.retrievable:
            raise SearchRequestError(
                f"The field '{name}' is not retrievable and cannot be selected.\r\n"
                "Parameter name: $select"
            )
    return select


def run_search(store: IndexStore, request: SearchRequest) -> dict[str, Any]:
    """The response body of ``docs/search`` for ``request`` (without paging links)."""
    schema = store.schema
    keep = compile_filter(request.filter, schema) if request.filter else None
    clauses = parse_order_by(request.order_by, schema)
    fields = _projection(store, request.select)
    with store.lock:
        allowed = (
            {key for key, document in store.documents.items() if keep(document)}
            if keep is not None
            else None
        )
    has_text = request.search is not None and request.search.strip() not in {"", "*"}
    rankings: list[list[tuple[str, float]]] = []
    weights: list[float] = []
    if has_text or not request.vector_queries:
        text = store.text_matches(request.search or "*", request.search_mode, request.search_fields)
        if allowed is not None:
            text = [item for item in text if item[0] in allowed]
        rankings.append(text[:MAX_TEXT_RECALL] if request.vector_queries else text)
        weights.append(1.0)
    pre = allowed if request.vector_filter_mode == "preFilter" else None
    for query in request.vector_queries:
        ranking = _vector_ranking(store, query, pre)
        if allowed is not None:
            ranking = [item for item in ranking if item[0] in allowed]
        rankings.append(ranking)
        weights.append(_weight(query))
    matches = rankings[0] if len(rankings) == 1 else fuse(rankings, weights)
    matches = _ordered(store, matches, clauses)
    top = request.top if request.top is not None else DEFAULT_PAGE_SIZE
    page = matches[request.skip : request.skip + top]
    vector_names = {field.name for field in schema.vector_fields} & set(fields)
    value = []
    with store.lock:
        for key, score in page:
            document = store.documents.get(key, {})
            result: dict[str, Any] = {"@search.score": score}
            for name in fields:
                vector = store.vectors[name].get(key) if name in vector_names else None
                result[name] = vector.tolist() if vector is not None else document.get(name)
            value.append(result)
    body: dict[str, Any] = {}
    if request.count:
        body["@odata.count"] = len(matches)
    body["value"] = value
    body["_more"] = request.top is None and len(matches) > request.skip + top
    return body
