"""The real azure-search-documents SDK against the Search emulator (``python -m emulators``):
every call Conduit makes, Azure's status codes and error bodies, rankings with known winners."""

from __future__ import annotations

import json

import httpx
import pytest
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.search.documents import SearchClient
from azure.search.documents.indexes import SearchIndexClient
from azure.search.documents.indexes.models import (
    HnswAlgorithmConfiguration,
    SearchableField,
    SearchField,
    SearchFieldDataType,
    SearchIndex,
    SimpleField,
    VectorSearch,
    VectorSearchProfile,
)
from azure.search.documents.models import VectorizedQuery

# A small corpus whose three rankings each have a known winner for "solar panel" and [1, 0, 0, 0]:
# text (BM25) → "a" (both words, twice); vector (cosine) → "b" (the same direction); hybrid (RRF
# with k = 4) → "c", second in both rankings: 1/62 + 1/62 beats "a"'s 1/61 + 1/64.
CORPUS = [
    ("a", "Solar panel guide", "solar panel solar panel installation on roofs", [0, 0, 1, 0]),
    ("b", "Wind power", "wind turbine blades and towers", [1, 0, 0, 0]),
    ("c", "Home energy", "a solar panel and a battery at home", [0.9, 0.15, 0, 0]),
    ("d", "Gardening", "roses tulips and garden soil", [0.1, 1, 0, 0]),
    ("e", "Cooking", "bread flour water and salt", [0, 0, 0, 1]),
    ("f", "Travel", "trains ferries and night buses", [0, 0.2, 0, 1]),
]
QUERY_VECTOR = [1.0, 0.0, 0.0, 0.0]


@pytest.fixture(scope="module")
def emulator(module_emulator_starter):
    return module_emulator_starter(EMULATOR_API_KEY="search-test-key")


def credential(emulator):
    return AzureKeyCredential(emulator.api_key)


def corpus_index(name: str) -> SearchIndex:
    return SearchIndex(
        name=name,
        fields=[
            SimpleField(name="id", type=SearchFieldDataType.STRING, key=True, filterable=True),
            SearchableField(name="title"),
            SearchableField(name="content"),
            SimpleField(
                name="rating", type=SearchFieldDataType.INT32, filterable=True, sortable=True
            ),
            SearchField(
                name="tags",
                type=SearchFieldDataType.Collection(SearchFieldDataType.STRING),  # type: ignore[operator]
                filterable=True,
            ),
            SearchField(
                name="vector",
                type="Collection(Edm.Single)",
                searchable=True,
                vector_search_dimensions=4,
                vector_search_profile_name="profile",
            ),
        ],
        vector_search=VectorSearch(
            algorithms=[HnswAlgorithmConfiguration(name="hnsw")],
            profiles=[VectorSearchProfile(name="profile", algorithm_configuration_name="hnsw")],
        ),
    )


@pytest.fixture(scope="module")
def corpus(emulator):
    """An index holding CORPUS, and a client on it."""
    indexes = SearchIndexClient(emulator.search_endpoint, credential(emulator))
    indexes.create_or_update_index(corpus_index("corpus"))
    client = SearchClient(emulator.search_endpoint, "corpus", credential(emulator))
    results = client.upload_documents(
        [
            {
                "id": key,
                "title": title,
                "content": content,
                "rating": rank,
                "tags": ["energy"] if key in "abc" else ["life"],
                "vector": vector,
            }
            for rank, (key, title, content, vector) in enumerate(CORPUS)
        ]
    )
    assert all(result.succeeded for result in results)
    yield client
    client.close()
    indexes.close()


def keys(results) -> list[str]:
    return [result["id"] for result in results]


def test_text_vector_and_hybrid_rankings_each_find_their_known_winner(corpus):
    text = list(corpus.search("solar panel", select=["id"]))
    assert keys(text) == ["a", "c"]
    assert text[0]["@search.score"] > text[1]["@search.score"] > 0

    vector = list(
        corpus.search(
            None,
            vector_queries=[
                VectorizedQuery(vector=QUERY_VECTOR, k_nearest_neighbors=3, fields="vector")
            ],
            select=["id"],
        )
    )
    assert keys(vector) == ["b", "c", "d"]
    assert vector[0]["@search.score"] == pytest.approx(1.0)  # cosine 1: 1 / (1 + 0)

    hybrid = list(
        corpus.search(
            "solar panel",
            vector_queries=[
                VectorizedQuery(vector=QUERY_VECTOR, k_nearest_neighbors=4, fields="vector")
            ],
            select=["id"],
        )
    )
    assert keys(hybrid)[0] == "c"
    assert hybrid[0]["@search.score"] == pytest.approx(2 / 62)
    assert set(keys(hybrid)) == {"a", "b", "c", "d"}


def test_filter_select_order_top_skip_and_count(corpus):
    paged = corpus.search(
        "*",
        filter="tags/any(t: t eq 'energy') and rating ge 1",
        order_by=["rating desc"],
        select=["id", "rating"],
        include_total_count=True,
        top=1,
        skip=1,
    )
    results = list(paged)
    assert paged.get_count() == 2
    assert [{k: v for k, v in r.items() if not k.startswith("@")} for r in results] == [
        {"id": "b", "rating": 1}
    ]

    filtered_vector = list(
        corpus.search(
            None,
            vector_queries=[
                VectorizedQuery(vector=[1, 0.1, 0, 0], k_nearest_neighbors=2, fields="vector")
            ],
            filter="search.in(id, 'd,e,f')",
            select=["id"],
        )
    )
    assert keys(filtered_vector) == ["d", "f"]  # pre-filtered: k nearest among the allowed


def test_an_unsupported_filter_is_refused_with_azures_400_body(corpus, emulator):
    with pytest.raises(HttpResponseError) as refused:
        list(corpus.search("*", filter="geo.distance(location, geography'POINT(0 0)') le 5"))
    assert refused.value.status_code == 400
    assert "geo.distance" in refused.value.message
    response = httpx.post(
        f"{emulator.search_endpoint}/indexes('corpus')/docs/search.post.search",
        params={"api-version": "2026-04-01"},
        headers={"api-key": emulator.api_key},
        json={"search": "*", "filter": "rating eq 'x'"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == ""
    assert error["message"].startswith("Invalid expression: A binary operator with incompatible")


def test_get_by_key_count_and_the_get_form_of_search(corpus, emulator):
    assert corpus.get_document("b", selected_fields=["id", "title"]) == {
        "id": "b",
        "title": "Wind power",
    }
    assert corpus.get_document("a")["vector"] == [0, 0, 1, 0]
    with pytest.raises(ResourceNotFoundError):
        corpus.get_document("missing")
    assert corpus.get_document_count() == len(CORPUS)
    response = httpx.get(
        f"{emulator.search_endpoint}/indexes/corpus/docs",
        params={
            "api-version": "2026-04-01",
            "search": "garden",
            "$select": "id",
            "$count": "true",
        },
        headers={"api-key": emulator.api_key},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["@odata.count"] == 1 and [item["id"] for item in body["value"]] == ["d"]


def test_index_actions_and_per_document_failures(emulator):
    indexes = SearchIndexClient(emulator.search_endpoint, credential(emulator))
    indexes.create_or_update_index(corpus_index("actions"))
    client = SearchClient(emulator.search_endpoint, "actions", credential(emulator))
    try:
        results = client.upload_documents(
            [{"id": "1", "title": "one"}, {"id": "not a key!", "title": "bad"}]
        )
        assert [(r.key, r.succeeded, r.status_code) for r in results] == [
            ("1", True, 201),
            ("not a key!", False, 400),
        ]
        assert "Invalid document key" in results[1].error_message
        client.merge_documents([{"id": "1", "content": "merged"}])
        assert client.get_document("1", selected_fields=["title", "content"]) == {
            "title": "one",
            "content": "merged",
        }
        [missing] = client.merge_documents([{"id": "2", "content": "x"}])
        assert (missing.succeeded, missing.status_code) == (False, 404)
        client.merge_or_upload_documents([{"id": "2", "title": "two"}])
        client.upload_documents([{"id": "1", "title": "replaced"}])  # upload replaces whole
        assert client.get_document("1").get("content") is None
        client.delete_documents([{"id": "1"}])
        assert client.get_document_count() == 1
        assert keys(client.search("two", select=["id"])) == ["2"]
        assert keys(client.search("replaced", select=["id"])) == []
    finally:
        indexes.delete_index("actions")
        client.close()
        indexes.close()


def test_a_request_over_sixteen_megabytes_is_413_and_the_sdk_splits_it(emulator):
    indexes = SearchIndexClient(emulator.search_endpoint, credential(emulator))
    indexes.create_or_update_index(corpus_index("large"))
    client = SearchClient(emulator.search_endpoint, "large", credential(emulator))
    try:
        big = [{"id": str(n), "content": "word " * 1_200_000} for n in range(3)]  # 6 MB each
        assert all(result.succeeded for result in client.upload_documents(big))
        assert client.get_document_count() == 3
        response = httpx.post(
            f"{emulator.search_endpoint}/indexes('large')/docs/search.index",
            params={"api-version": "2026-04-01"},
            headers={"api-key": emulator.api_key, "content-type": "application/json"},
            content=json.dumps({"value": big}),
        )
        assert response.status_code == 413
        assert "16777216 byte limit" in response.json()["error"]["message"]
    finally:
        indexes.delete_index("large")
        client.close()
        indexes.close()


def test_index_management_and_vector_dimension_checks(emulator):
    indexes = SearchIndexClient(emulator.search_endpoint, credential(emulator))
    try:
        indexes.create_index(corpus_index("managed"))
        assert "managed" in list(indexes.list_index_names())
        fetched = indexes.get_index("managed")
        assert [field.name for field in fetched.fields] == [
            "id",
            "title",
            "content",
            "rating",
            "tags",
            "vector",
        ]
        client = SearchClient(emulator.search_endpoint, "managed", credential(emulator))
        with pytest.raises(HttpResponseError) as refused:
            client.upload_documents([{"id": "1", "vector": [1, 2, 3]}])
        assert refused.value.status_code == 400
        assert "must have 4 dimensions" in refused.value.message
        client.close()
    finally:
        indexes.delete_index("managed")
    assert "managed" not in list(indexes.list_index_names())
    with pytest.raises(ResourceNotFoundError):
        indexes.get_index("managed")
    indexes.close()


def test_the_api_key_is_required_and_checked(emulator):
    wrong = SearchClient(emulator.search_endpoint, "corpus", AzureKeyCredential("wrong"))
    with pytest.raises(HttpResponseError) as refused:
        wrong.get_document_count()
    assert refused.value.status_code == 403
    response = httpx.get(
        f"{emulator.search_endpoint}/indexes", params={"api-version": "2026-04-01"}
    )
    assert response.status_code == 401
    assert "api-key" in response.json()["error"]["message"]
    with pytest.raises(ClientAuthenticationError):
        SearchIndexClient(emulator.search_endpoint, AzureKeyCredential("")).get_index("corpus")


def test_more_than_a_page_is_followed_by_the_sdk(emulator):
    indexes = SearchIndexClient(emulator.search_endpoint, credential(emulator))
    indexes.create_or_update_index(corpus_index("pages"))
    client = SearchClient(emulator.search_endpoint, "pages", credential(emulator))
    try:
        client.upload_documents([{"id": str(n), "rating": n} for n in range(120)])
        # No $top: Azure answers 50 a page with the next page's parameters; the SDK follows.
        ratings = [result["rating"] for result in client.search("*", order_by=["rating"])]
        assert ratings == list(range(120))
    finally:
        indexes.delete_index("pages")
        client.close()
        indexes.close()


def test_indexes_persist_across_a_restart(start_emulator, tmp_path):
    data_dir = str(tmp_path / "search-data")
    first = start_emulator(EMULATOR_SEARCH_DATA_DIR=data_dir)
    SearchIndexClient(first.search_endpoint, credential(first)).create_index(corpus_index("kept"))
    SearchClient(first.search_endpoint, "kept", credential(first)).upload_documents(
        [{"id": "1", "content": "still here after a restart", "vector": [0, 1, 0, 0]}]
    )
    first.process.stop()
    second = start_emulator(EMULATOR_SEARCH_DATA_DIR=data_dir)
    client = SearchClient(second.search_endpoint, "kept", credential(second))
    assert keys(client.search("restart", select=["id"])) == ["1"]
    vector = client.search(
        None,
        vector_queries=[
            VectorizedQuery(vector=[0, 1, 0, 0], k_nearest_neighbors=1, fields="vector")
        ],
    )
    assert keys(vector) == ["1"]
