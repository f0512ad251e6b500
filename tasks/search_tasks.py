"""Azure AI Search as Celery tasks: thin wrappers around tasks/search.py and tasks/search_index.py,
with the policy of tasks/ai_tasks.py (idempotent by task id, transient errors retried, permanent
ones failing with a clear message).

    >>> app.send_task("ai.search", args=["docs", "machine learning"], kwargs={"top": 5}).get()
    >>> app.send_task("ai.index_texts", args=["docs", [{"id": "a", "text": "..."}]]).get()

``ai.index_texts`` fans out: it replaces itself with a chord of ``ai.index_chunks`` tasks (one
per batch of chunks, spread over the workers) and ``ai.index_summary``, whose result is the
answer to the original task id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import chord
from celery.canvas import Signature

from settings import get_settings
from tasks import search, search_index
from tasks.ai_tasks import ai_task

search_task = ai_task("ai.search")(search.search_documents)
vector_search_task = ai_task("ai.vector_search")(search.vector_search)
hybrid_search_task = ai_task("ai.hybrid_search")(search.hybrid_search)


def _batch_failure(
    error: Exception, _index: str, chunks: Sequence[dict[str, Any]], *_: Any, **__: Any
) -> dict[str, Any]:
    reason = f"{type(error).__name__}: {error}"
    return {
        "batch": chunks[0].get(search.KEY_FIELD) if chunks else None,
        "indexed": 0,
        "failed": [{"key": chunk.get(search.KEY_FIELD), "error": reason} for chunk in chunks],
    }


index_chunks_task = ai_task("ai.index_chunks", failure_result=_batch_failure)(
    search_index.index_chunk_batch
)
index_summary_task = ai_task("ai.index_summary")(search_index.summarize)


def index_texts(
    index: str, docs: Sequence[dict[str, Any]], *, app_id: str | None = None
) -> Signature:
    """The workflow that chunks, embeds and uploads ``docs`` into ``index`` (see module doc)."""
    chunks = search_index.plan_chunks(docs)
    size = get_settings().search_index_batch_size
    batches = [chunks[start : start + size] for start in range(0, len(chunks), size)]
    if not batches:
        return index_summary_task.si([], index, len(docs))
    return chord(
        [index_chunks_task.s(index, batch, app_id=app_id) for batch in batches],
        index_summary_task.s(index, len(docs)),
    )


index_texts_task = ai_task("ai.index_texts")(index_texts)
