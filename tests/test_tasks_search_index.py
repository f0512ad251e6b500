"""``ai.index_texts`` through real ``celery worker`` processes, the emulator and Redis: a thousand
chunks embedded under the quota and uploaded, with a worker SIGKILLed midway."""

from __future__ import annotations

import pytest

from settings import get_settings
from tasks import search
from tasks.search_index import plan_chunks

pytestmark = pytest.mark.slow

# A paragraph a chunk (no overlap, and two paragraphs do not fit one chunk), 200 documents of
# five paragraphs: 1,000 chunks, in 50 batches of 20.
CHUNK_ENV = {
    "APP_SEARCH_CHUNK_TOKENS": "40",
    "APP_SEARCH_CHUNK_OVERLAP_TOKENS": "0",
    "APP_SEARCH_INDEX_BATCH_SIZE": "20",
    "APP_SEARCH_VECTOR_DIMENSIONS": "64",
}
# Short, so a killed worker's tasks come back to the other worker within the test.
WORKER_ENV = {"TASK_TIME_LIMIT_SECONDS": "20", "BROKER_VISIBILITY_TIMEOUT_SECONDS": "25"}
RESULT_TIMEOUT_SECS = 240
INDEX = "crash-test"


def corpus() -> list[dict[str, str]]:
    return [
        {
            "id": f"doc-{n}",
            "title": f"Document {n}",
            "text": "\n\n".join(
                f"Paragraph {p} of document {n} talks about subject {n * 5 + p} in a few "
                "plain words, long enough to fill most of a chunk."
                for p in range(5)
            ),
        }
        for n in range(200)
    ]


def test_a_thousand_chunks_survive_a_worker_killed_midway(
    start_emulator, start_worker, celery_app, conduit_env, monkeypatch
):
    # Each embeddings request takes a while, so the kill lands in the middle of the work.
    emulator = start_emulator(EMULATOR_FIRST_TOKEN_MS="150")
    env = {**emulator.client_env(), **CHUNK_ENV, **WORKER_ENV}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    docs = corpus()
    expected = {chunk["id"] for chunk in plan_chunks(docs)}
    assert len(expected) == 1000

    first = start_worker(concurrency=2, **env)
    result = celery_app.send_task("ai.index_texts", args=[INDEX, docs])

    def indexed() -> int:
        try:
            return search.get_document_count(INDEX)
        except Exception:  # noqa: BLE001 - the index does not exist yet
            return 0

    first.wait_until(lambda: indexed() >= 200, RESULT_TIMEOUT_SECS, "200 chunks indexed")
    first.kill()
    assert indexed() < 1000, "the work finished before the kill; slow the emulator down"
    second = start_worker(concurrency=2, **env)

    summary = result.get(timeout=RESULT_TIMEOUT_SECS)
    assert summary["failed"] == []
    assert (summary["documents"], summary["chunks"], summary["indexed"]) == (200, 1000, 1000)
    assert search.get_document_count(INDEX) == 1000
    found = search.search_documents(INDEX, "*", top=1000, select=["id"], include_total_count=True)
    assert found["count"] == 1000
    assert {document["id"] for document in found["results"]} == expected
    # Each chunk carries its own vector, searchable by the text it was embedded from.
    hit = search.search_documents(INDEX, "subject 517", top=1, select=["id"])
    assert hit["results"][0]["id"] == "doc-103-0002"
    assert second.process.poll() is None


def test_the_search_tasks_through_a_worker(start_emulator, start_worker, celery_app, monkeypatch):
    emulator = start_emulator()
    for name, value in emulator.client_env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    search.ensure_index("task-calls", vector_dimensions=2)
    search.upload_documents(
        "task-calls",
        [
            {"id": "x", "content": "apples and pears", "content_vector": [1, 0]},
            {"id": "y", "content": "pears only", "content_vector": [0, 1]},
        ],
    )
    start_worker(concurrency=2, **emulator.client_env())

    def run(name, *args, **kwargs):
        return celery_app.send_task(name, args=args, kwargs=kwargs).get(timeout=RESULT_TIMEOUT_SECS)

    text = run("ai.search", "task-calls", "apples", select=["id"], include_total_count=True)
    assert ([r["id"] for r in text["results"]], text["count"]) == (["x"], 1)
    vector = run("ai.vector_search", "task-calls", [0.1, 1.0], k=1, select=["id"])
    assert [r["id"] for r in vector["results"]] == ["y"]
    hybrid = run("ai.hybrid_search", "task-calls", "pears only", [0.1, 1.0], select=["id"])
    assert [r["id"] for r in hybrid["results"]] == ["y", "x"]  # first in both rankings
    failed = celery_app.send_task("ai.search", args=["no-such-index", "x"])
    with pytest.raises(Exception, match="not found"):
        failed.get(timeout=RESULT_TIMEOUT_SECS)
    assert failed.state == "FAILURE"
