"""tasks/search.py, tasks/search_index.py's chunking and the AzureSearchService facade, with the
real SDK against the Search emulator."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from settings import get_settings
from settings.redis_server import free_port
from settings.tiktoken_offline import encoding_for_model
from tasks import search
from tasks.errors import InvalidInput, PermanentError, TransientError
from tasks.search_index import (
    MAX_CORPUS_CHARS,
    chunk_key,
    chunk_text,
    plan_chunks,
    summarize,
)


@pytest.fixture(scope="module")
def emulator(module_emulator_starter):
    return module_emulator_starter(EMULATOR_API_KEY="tasks-search-key")


@pytest.fixture
def search_env(emulator, monkeypatch, tiktoken_cache):
    for name, value in emulator.client_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tiktoken_cache))
    return emulator


def test_the_endpoint_falls_back_to_the_embedded_emulator(monkeypatch):
    for name in ("APP_SEARCH_ENDPOINT", "APP_SEARCH_API_KEY", "EMULATOR_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EMULATOR_HOST", "127.0.0.1")
    monkeypatch.setenv("EMULATOR_PORT", "8123")
    assert search.search_endpoint(get_settings()) == ("http://127.0.0.1:8123/search", "conduit-dev")
    monkeypatch.setenv("APP_SEARCH_ENDPOINT", "https://x.search.windows.net")
    get_settings.cache_clear()
    assert search.search_endpoint(get_settings()) == ("https://x.search.windows.net", None)
    monkeypatch.setenv("APP_SEARCH_API_KEY", "k")
    get_settings.cache_clear()
    assert search.search_endpoint(get_settings())[1] == "k"


def test_every_call_against_the_emulator(search_env):
    definition = search.ensure_index(
        "tasks-calls", vector_dimensions=3, filterable_fields=["kind"], int_fields=["year"]
    )
    assert [field["name"] for field in definition["fields"]] == [
        "id",
        "title",
        "content",
        "kind",
        "year",
        "content_vector",
    ]
    # Created or updated: ensuring it again with a new field adds the field.
    search.ensure_index(
        "tasks-calls",
        vector_dimensions=3,
        filterable_fields=["kind", "lang"],
        int_fields=["year"],
    )
    documents = [
        {"id": "1", "title": "Rivers", "content": "the river flows to the sea", "kind": "geo",
         "year": 2001, "content_vector": [1, 0, 0]},
        {"id": "2", "title": "Mountains", "content": "a mountain above the river valley",
         "kind": "geo", "year": 2010, "content_vector": [0, 1, 0]},
        {"id": "3", "title": "Bread", "content": "flour water salt yeast", "kind": "food",
         "year": 2020, "content_vector": [0, 0, 1]},
        {"id": "bad key", "title": "refused"},
    ]  # fmt: skip
    results = search.upload_documents("tasks-calls", documents)
    assert [(r["key"], r["succeeded"]) for r in results] == [
        ("1", True),
        ("2", True),
        ("3", True),
        ("bad key", False),
    ]
    assert "Invalid document key" in results[3]["error_message"]

    text = search.search_documents(
        "tasks-calls", "river", select=["id"], include_total_count=True, top=10
    )
    assert [r["id"] for r in text["results"]] == ["1", "2"] and text["count"] == 2
    ordered = search.search_documents(
        "tasks-calls", "*", filter="kind eq 'geo'", order_by="year desc", select=["id"], skip=1
    )
    assert [r["id"] for r in ordered["results"]] == ["1"]
    vector = search.vector_search("tasks-calls", [0.1, 0.9, 0], k=2, select=["id"])
    assert [r["id"] for r in vector["results"]] == ["2", "1"]
    # "2" is 2nd in text and 2nd of the k = 2 nearest: 2 / 62 beats "1" (1st in text only) and
    # "3" (1st of the nearest only) at 1 / 61 each.
    hybrid = search.hybrid_search("tasks-calls", "river", [0, 0.2, 1], k=2, select=["id"])
    assert [r["id"] for r in hybrid["results"]] == ["2", "1", "3"] or [
        r["id"] for r in hybrid["results"]
    ] == ["2", "3", "1"]
    assert search.get_document("tasks-calls", "3", ["title"]) == {"title": "Bread"}
    assert search.get_document_count("tasks-calls") == 3
    search.delete_documents("tasks-calls", ["3", {"id": "2"}])
    assert search.get_document_count("tasks-calls") == 1
    assert "tasks-calls" in search.list_indexes()
    search.delete_index("tasks-calls")
    assert "tasks-calls" not in search.list_indexes()


def test_errors_become_permanent_or_transient_and_name_the_fix(search_env, monkeypatch):
    with pytest.raises(PermanentError, match="not found"):
        search.get_document_count("no-such-index")
    with pytest.raises(PermanentError, match=r"400.*geo\.distance"):
        search.ensure_index("tasks-errors")
        search.search_documents("tasks-errors", "*", filter="geo.distance(a, b) lt 1")
    with pytest.raises(InvalidInput, match="vector must be a non-empty list"):
        search.vector_search("tasks-errors", [])
    monkeypatch.setenv("EMULATOR_API_KEY", "wrong")
    get_settings.cache_clear()
    with pytest.raises(PermanentError, match="APP_SEARCH_API_KEY"):
        search.get_document_count("tasks-errors")
    monkeypatch.setenv("EMULATOR_PORT", str(free_port()))  # nothing listens there
    get_settings.cache_clear()
    with pytest.raises(TransientError, match="cannot reach Azure AI Search"):
        search.get_document_count("tasks-errors")


def test_an_upload_of_more_than_azure_takes_at_once_goes_in_batches(search_env):
    search.ensure_index("tasks-batches")
    # The emulator, like Azure, refuses more than 1,000 actions in one request.
    results = search.upload_documents(
        "tasks-batches", [{"id": str(n), "content": f"item {n}"} for n in range(2500)]
    )
    assert len(results) == 2500 and all(result["succeeded"] for result in results)
    assert search.get_document_count("tasks-batches") == 2500
    search.delete_index("tasks-batches")


def test_uploads_are_cut_at_a_thousand_documents_or_sixteen_megabytes():
    small = [{"id": str(n)} for n in range(2500)]
    assert [len(batch) for batch in search.plan_upload_batches(small)] == [1000, 1000, 500]
    large = [{"id": str(n), "content": "x" * 6_000_000} for n in range(5)]
    batches = list(search.plan_upload_batches(large))
    assert [len(batch) for batch in batches] == [2, 2, 1]
    for batch in batches:
        size = sum(len(json.dumps(large[i])) for i in batch)
        assert size < search.MAX_BATCH_BYTES


OLDER_README_EXAMPLE = textwrap.dedent(
    """
    from tasks.search_service import AzureSearchService

    # Initialize search service
    search_service = AzureSearchService(
        index_name="my-documents",
        app_id="my_app"
    )

    # Upload documents
    documents = [
        {"id": "1", "title": "AI Overview", "content": "AI is transforming..."},
        {"id": "2", "title": "ML Basics", "content": "Machine learning..."}
    ]
    await search_service.upload_documents(documents)

    # Text search
    results = await search_service.search_documents("machine learning", top=5)

    # Vector search (requires vector field in documents)
    vector_results = await search_service.vector_search(
        vector=[0.1, 0.2, 0.3],  # Your query vector
        vector_field="content_vector",
        top=10
    )

    # Get specific document
    document = await search_service.get_document("1")

    # Clean up
    search_service.close()
    """
)


def test_the_older_readme_example_runs_with_only_the_import_changed(search_env):
    # The older service worked on an index that existed; one document already has a vector.
    search.ensure_index("my-documents", vector_dimensions=3)
    search.upload_documents(
        "my-documents", [{"id": "0", "content": "vectors", "content_vector": [0.1, 0.2, 0.25]}]
    )
    namespace: dict = {}
    body = textwrap.indent(OLDER_README_EXAMPLE, "    ")
    exec(f"async def example():\n{body}\n    return locals()", namespace)
    outcome = asyncio.run(namespace["example"]())

    assert [r["id"] for r in outcome["results"]] == ["2"]
    assert outcome["results"][0]["title"] == "ML Basics"
    assert [r["id"] for r in outcome["vector_results"]] == ["0"]
    assert outcome["document"] == {
        "id": "1",
        "title": "AI Overview",
        "content": "AI is transforming...",
    }
    service = outcome["search_service"]
    assert asyncio.run(_count_after_close(service)) == "closed"


async def _count_after_close(service) -> str:
    await service.close()  # awaiting close is allowed too
    try:
        await service.get_document_count()
    except RuntimeError as error:
        assert "was closed" in str(error)
        return "closed"
    return "still open"


def test_chunks_respect_the_token_limit_overlap_and_cover_the_text(tiktoken_cache, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tiktoken_cache))
    paragraphs = [
        f"Paragraph {n} says something about topic {n}. " * (3 + n % 5) for n in range(30)
    ]
    paragraphs.append("word " * 500)  # one paragraph longer than a chunk, with no sentences
    text = "\n\n".join(paragraphs)
    encoding = encoding_for_model(get_settings().embedding_engine)
    chunks = chunk_text(text, 100, 20)
    assert len(chunks) > 10
    assert all(len(encoding.encode(chunk)) <= 100 for chunk in chunks)
    joined = "\n\n".join(chunks)
    assert all(paragraph.strip() in joined for paragraph in paragraphs[:-1])
    assert joined.count("word") >= 500  # nothing lost (overlaps repeat some)
    for before, after in itertools.pairwise(chunks):
        tail = after.split("\n\n")[0]
        assert before.endswith(tail) and len(encoding.encode(tail)) <= 20


def test_planned_chunks_have_stable_valid_keys_and_bad_documents_are_named(
    tiktoken_cache, monkeypatch
):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tiktoken_cache))
    monkeypatch.setenv("APP_SEARCH_CHUNK_TOKENS", "50")
    monkeypatch.setenv("APP_SEARCH_CHUNK_OVERLAP_TOKENS", "0")
    docs = [
        {"id": "guide", "title": "Guide", "text": "One sentence here. " * 40},
        {"id": "notes/2024 #1", "text": "short"},
    ]
    chunks = plan_chunks(docs)
    assert chunks == plan_chunks(docs)
    keys = [chunk["id"] for chunk in chunks]
    assert len(set(keys)) == len(keys) and keys[0] == "guide-0000"
    assert keys[-1] == chunk_key("notes/2024 #1", 0) and keys[-1].startswith("b64=")
    assert all(
        set(key) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-=")
        for key in keys
    )
    with pytest.raises(InvalidInput, match=r"docs\[1\]\.text"):
        plan_chunks([{"id": "a", "text": "x"}, {"id": "b"}])
    # A plain id that looks like an encoded one does not collide with it.
    assert chunk_key("b64YWJj", 0) != chunk_key("abc", 0)
    with pytest.raises(InvalidInput, match="send the corpus in several calls"):
        plan_chunks([{"id": "big", "text": "x" * (MAX_CORPUS_CHARS + 1)}])
    with pytest.raises(InvalidInput, match="appears twice"):
        plan_chunks([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}])


def test_a_batch_reported_twice_counts_once_in_the_summary():
    first = {"batch": "a-0000", "indexed": 2, "failed": []}
    second = {"batch": "b-0000", "indexed": 1, "failed": [{"key": "b-0001", "error": "400"}]}
    summary = summarize([first, second, first], "docs", 2)
    assert summary == {
        "index": "docs",
        "documents": 2,
        "chunks": 4,
        "indexed": 3,
        "failed": [{"key": "b-0001", "error": "400"}],
    }


PRIMING_CHECK = """
from azure.search.documents._utils.model_base import Model
import azure.search.documents.models._models as documents
from tasks import search

classes = [v for v in vars(documents).values()
           if isinstance(v, type) and issubclass(v, Model) and v is not Model]
name = lambda cls: f"{cls.__module__}.{cls.__qualname__}"
assert not any(name(cls) in Model._calculated for cls in classes)
search.search_client("any-index")
missing = [name(cls) for cls in classes if name(cls) not in Model._calculated]
assert not missing, missing
print(len(classes))
"""


def test_sdk_models_are_worked_out_before_threads_share_a_client():
    # A fresh interpreter: the SDK's classes as a worker process first sees them.
    done = subprocess.run(
        [sys.executable, "-c", PRIMING_CHECK],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CONDUIT_ENV_FILE": os.devnull},
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) > 10
