"""The batches of one embedding task already answered, kept in Redis by task id.

``create_embedding_batch`` sends its texts as several requests. When the quota refuses one half
way, the task retries later; without this it would start again from the first batch and pay
for every finished one again (issue 10.17 measured two thirds of the tokens charged as
repeats). With it, each answered request's vectors are kept under the task id, and the retry
sends only the batches not yet answered.

Vectors are kept as packed float64 (8 bytes a number, exactly the floats the SDK returned; JSON
text would take two to three times that), one hash field per batch, the field named by the
batch's index range and the hash of its texts, so a batch is never reused for other texts.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence
from typing import cast

from settings import get_settings
from tasks.connections import redis_bytes_client

KEY_PREFIX = "conduit:embedding-batches"

Vector = list[float]


def batch_field(start: int, texts: Sequence[str]) -> str:
    """The name a batch is kept under: where it starts, how long it is and what it holds."""
    digest = hashlib.sha256("\x00".join(texts).encode("utf-8", "surrogatepass")).hexdigest()
    return f"{start}+{len(texts)}:{digest[:32]}"


def pack_vectors(vectors: Sequence[Vector]) -> bytes:
    """Vectors of one dimension as ``<dimension: 4 bytes little-endian><float64 ...>``."""
    dimension = len(vectors[0]) if vectors else 0
    if any(len(vector) != dimension for vector in vectors):
        raise ValueError("every vector of a batch must have the same dimension")
    packed = array("d", (value for vector in vectors for value in vector))
    if packed.itemsize != 8:  # pragma: no cover - every platform Python runs on has 8-byte double
        raise RuntimeError("array('d') is not 8 bytes here")
    return dimension.to_bytes(4, "little") + packed.tobytes()


def unpack_vectors(data: bytes) -> list[Vector]:
    dimension = int.from_bytes(data[:4], "little")
    values = array("d")
    values.frombytes(data[4:])
    if dimension == 0:
        return []
    flat = values.tolist()
    return [flat[start : start + dimension] for start in range(0, len(flat), dimension)]


class EmbeddingCheckpoint:
    """The answered batches of task ``task_id``; kept as long as Celery keeps results."""

    def __init__(self, task_id: str) -> None:
        self.key = f"{KEY_PREFIX}:{task_id}"

    def get(self, start: int, texts: Sequence[str]) -> list[Vector] | None:
        data = cast(bytes | None, redis_bytes_client().hget(self.key, batch_field(start, texts)))
        return None if data is None else unpack_vectors(data)

    def put(self, start: int, texts: Sequence[str], vectors: Sequence[Vector]) -> None:
        pipe = redis_bytes_client().pipeline(transaction=True)
        pipe.hset(self.key, mapping={batch_field(start, texts): pack_vectors(vectors)})
        pipe.expire(self.key, get_settings().result_expires_s)
        pipe.execute()

    def drop(self) -> None:
        redis_bytes_client().delete(self.key)
