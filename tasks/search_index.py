"""Indexing texts for retrieval: chunk them (token-aware), embed the chunks inside the embedding
quota, upload them with their vectors.

tasks/search_tasks.py's ``index_texts(index, docs)`` returns the Celery workflow that does it
(``ai.index_texts`` runs it): one ``ai.index_chunks`` task per batch of chunks
(APP_SEARCH_INDEX_BATCH_SIZE), run by whichever workers are free, then ``ai.index_summary``.
Every chunk's key is derived from its document id and position, and the upload is
merge-or-upload, so a batch run twice (its worker was killed after uploading, before
acknowledging) writes the same documents again: each chunk is indexed exactly once.

    >>> workflow = index_texts("docs", [{"id": "guide", "title": "Guide", "text": long_text}])
    >>> app.send_task("ai.index_texts", args=["docs", docs]).get()   # through a worker

An index made here has ``id`` (key), ``doc_id``, ``chunk``, ``title``, ``content``, ``source``
and the vector field ``content_vector``.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from settings import get_settings
from settings.tiktoken_offline import encoding_for_model
from tasks import search
from tasks.embedding import create_embedding_batch
from tasks.errors import InvalidInput

TEXT_FIELDS = ("title", "content")
FILTERABLE_FIELDS = ("doc_id", "source")
INT_FIELDS = ("chunk",)
# A key Azure accepts as it is; other document ids are base64url-encoded behind "b64=", which no
# plain id can start with (plain ids hold no "="), so the two kinds never collide.
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,200}$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

# One ai.index_texts call carries its whole corpus in Celery messages held in Redis; beyond this,
# send the corpus in several calls (each chunk's key is stable, so the order does not matter).
MAX_CORPUS_CHARS = 50_000_000

_ensured: set[tuple[str, str, int]] = set()
_ensured_lock = threading.Lock()


class TextDocument(BaseModel):
    id: str = Field(min_length=1, max_length=512)
    text: str = Field(min_length=1)
    title: str = ""
    source: str = ""


def chunk_key(doc_id: str, position: int) -> str:
    """The index key of chunk ``position`` of document ``doc_id``: stable, and a valid key."""
    if _PLAIN_KEY.match(doc_id):
        base = doc_id
    else:
        base = "b64=" + base64.urlsafe_b64encode(doc_id.encode()).decode()
    return f"{base}-{position:04d}"


def _pieces(text: str, max_tokens: int, encode: Any, decode: Any) -> list[tuple[str, int]]:
    """Paragraphs, or sentences of a paragraph too long, or token windows of a sentence too
    long: each piece with its token count, none over ``max_tokens``."""
    pieces: list[tuple[str, int]] = []
    for block in re.split(r"\n\s*\n", text):
        paragraph = block.strip()
        if not paragraph:
            continue
        count = len(encode(paragraph))
        if count <= max_tokens:
            pieces.append((paragraph, count))
            continue
        for sentence in _SENTENCE_END.split(paragraph):
            tokens = encode(sentence)
            for start in range(0, len(tokens), max_tokens):
                window = tokens[start : start + max_tokens]
                pieces.append((decode(window), len(window)))
    return pieces


def chunk_text(
    text: str, max_tokens: int, overlap_tokens: int, deployment: str | None = None
) -> list[str]:
    """``text`` cut into chunks of at most ``max_tokens`` tokens of the embedding model, at
    paragraph, then sentence, then token boundaries; each chunk after the first starts with the
    last pieces of the one before, up to ``overlap_tokens``."""
    encoding = encoding_for_model(deployment or get_settings().embedding_engine)

    def encode(part: str) -> list[int]:
        return encoding.encode(part, disallowed_special=())

    # Pieces leave room for the overlap, so every chunk after the first can start with one.
    piece_limit = max(1, max_tokens - overlap_tokens - 1) if overlap_tokens else max_tokens
    pieces = _pieces(text, piece_limit, encode, encoding.decode)
    chunks: list[str] = []
    current: list[tuple[str, int]] = []
    size = 0
    for piece in pieces:
        # The separator between pieces costs about a token.
        if current and size + piece[1] + 1 > max_tokens:
            chunk = "\n\n".join(part for part, _ in current)
            chunks.append(chunk)
            current, size = [], 0
            if overlap_tokens and overlap_tokens + piece[1] + 1 <= max_tokens:
                # The next chunk starts with the last tokens of this one.
                tail = encode(chunk)[-overlap_tokens:]
                current, size = [(encoding.decode(tail), len(tail))], len(tail) + 1
        current.append(piece)
        size += piece[1] + 1
    if current:
        chunks.append("\n\n".join(part for part, _ in current))
    return chunks


def plan_chunks(docs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every chunk of ``docs`` as an index document without its vector, in order."""
    settings = get_settings()
    total = sum(len(doc.get("text") or "") for doc in docs if isinstance(doc, dict))
    if total > MAX_CORPUS_CHARS:
        raise InvalidInput(
            f"docs hold {total:,} characters of text; one index_texts call takes at most "
            f"{MAX_CORPUS_CHARS:,}: send the corpus in several calls"
        )
    chunks = []
    seen: set[str] = set()
    for position, raw in enumerate(docs):
        try:
            doc = TextDocument.model_validate(raw)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise InvalidInput(f"docs[{position}].{field}: {first['msg']}") from None
        if doc.id in seen:
            raise InvalidInput(f"docs[{position}].id: {doc.id!r} appears twice")
        seen.add(doc.id)
        texts = chunk_text(
            doc.text, settings.search_chunk_tokens, settings.search_chunk_overlap_tokens
        )
        for number, text in enumerate(texts):
            chunks.append(
                {
                    search.KEY_FIELD: chunk_key(doc.id, number),
                    "doc_id": doc.id,
                    "chunk": number,
                    "title": doc.title,
                    "content": text,
                    "source": doc.source,
                }
            )
    return chunks


def ensure_chunk_index(index: str, dimensions: int) -> None:
    """Create or update ``index`` for chunks of ``dimensions``-long vectors, once per process."""
    endpoint, _key = search.search_endpoint(get_settings())
    marker = (endpoint, index, dimensions)
    with _ensured_lock:
        if marker in _ensured:
            return
    search.ensure_index(
        index,
        text_fields=TEXT_FIELDS,
        vector_dimensions=dimensions,
        filterable_fields=FILTERABLE_FIELDS,
        int_fields=INT_FIELDS,
    )
    with _ensured_lock:
        _ensured.add(marker)


def index_chunk_batch(
    index: str, chunks: Sequence[dict[str, Any]], *, app_id: str | None = None
) -> dict[str, Any]:
    """Embed ``chunks`` (one embeddings request, inside the quota) and upload them with their
    vectors: ``{"indexed": n, "failed": [{"key", "error"}]}``."""
    if not chunks:
        return {"batch": None, "indexed": 0, "failed": []}
    settings = get_settings()
    vectors = create_embedding_batch(
        [chunk["content"] for chunk in chunks],
        truncate=True,
        app_id=app_id,
        dimensions=settings.search_vector_dimensions,
    )
    ensure_chunk_index(index, len(vectors[0]))
    documents = [
        {**chunk, search.VECTOR_FIELD: vector}
        for chunk, vector in zip(chunks, vectors, strict=True)
    ]
    results = search.upload_documents(index, documents)
    failed = [
        {"key": result["key"], "error": result["error_message"]}
        for result in results
        if not result["succeeded"]
    ]
    return {
        "batch": chunks[0][search.KEY_FIELD],
        "indexed": len(results) - len(failed),
        "failed": failed,
    }


def summarize(
    batch_results: Sequence[dict[str, Any]], index: str, documents: int
) -> dict[str, Any]:
    """The workflow's answer: how many chunks went in, and which did not (and why).

    A batch's result can arrive twice (its worker was killed after reporting it, before
    acknowledging it, and the batch ran again from its stored result): each batch, named by its
    first key, counts once."""
    unique = {result.get("batch"): result for result in batch_results}
    failed = [item for result in unique.values() for item in result.get("failed", [])]
    indexed = sum(result.get("indexed", 0) for result in unique.values())
    return {
        "index": index,
        "documents": documents,
        "chunks": indexed + len(failed),
        "indexed": indexed,
        "failed": failed,
    }
