"""Embeddings: deterministic vectors in which texts that share words lie closer together.

Each word (lower-cased) owns a fixed pseudo-random direction, seeded by a hash of the word; a
text's vector is the normalised sum of its words' directions. Texts sharing words therefore have
a clearly positive cosine similarity, texts sharing none are near orthogonal, and the same text
always gets the same vector. The directions are dense, so ``dimensions`` can shorten a vector
by truncating and re-normalising it, as text-embedding-3 models do.

Azure's limits apply: at most :data:`MAX_INPUTS` inputs a request, each at most
:data:`MAX_INPUT_TOKENS` tokens, otherwise 400 with the service's wording.

No I/O.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from emulators.errors import BadRequest
from settings.tiktoken_offline import encoding_for_model

MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8191
# Native sizes; an unknown deployment name gets the 3-large size.
MODEL_DIMENSIONS = {
    "text-embedding-3-large": 3072,
    "text-embedding-3-small": 1536,
    "text-embedding-ada-002": 1536,
}
DEFAULT_DIMENSIONS = 3072
# Azure estimates an embedding request's tokens from its characters at about four a token.
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class EmbeddingRequest:
    deployment: str
    texts: list[str]
    dimensions: int
    encoding_format: str

    @classmethod
    def from_body(cls, deployment: str, body: dict[str, Any]) -> EmbeddingRequest:
        texts = _texts(deployment, body.get("input"))
        if len(texts) > MAX_INPUTS:
            raise BadRequest(
                f"Too many inputs. The max number of inputs is {MAX_INPUTS}. We hope to increase "
                "the number of inputs per request soon. Please contact us through an Azure "
                "support request at: https://go.microsoft.com/fwlink/?linkid=2213926 for "
                "further questions.",
                "input",
            )
        encoding = encoding_for_model(deployment)
        for text in texts:
            count = len(encoding.encode(text, disallowed_special=()))
            if count > MAX_INPUT_TOKENS:
                raise BadRequest(
                    f"This model's maximum context length is {MAX_INPUT_TOKENS + 1} tokens, "
                    f"however you requested {count} tokens ({count} in your prompt; 0 for the "
                    "completion). Please reduce your prompt; or completion length.",
                    "input",
                )
        native = native_dimensions(deployment)
        dimensions = body.get("dimensions") or native
        if not isinstance(dimensions, int) or not 1 <= dimensions <= native:
            raise BadRequest(f"'dimensions' must be an integer from 1 to {native}", "dimensions")
        encoding_format = body.get("encoding_format") or "float"
        if encoding_format not in {"float", "base64"}:
            raise BadRequest("'encoding_format' must be 'float' or 'base64'", "encoding_format")
        return cls(deployment, texts, dimensions, encoding_format)


def native_dimensions(deployment: str) -> int:
    for model, size in MODEL_DIMENSIONS.items():
        if model in deployment:
            return size
    return DEFAULT_DIMENSIONS


def _texts(deployment: str, value: Any) -> list[str]:
    """A string, a list of strings, a token list or a list of token lists, as texts."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, str) for item in value):
            return value
        encoding = encoding_for_model(deployment)
        if all(isinstance(item, int) for item in value):
            return [encoding.decode(value)]
        if all(isinstance(item, list) and all(isinstance(t, int) for t in item) for item in value):
            return [encoding.decode(item) for item in value]
    raise BadRequest("'input' must be a string, an array of strings or an array of tokens", "input")


def estimate_tokens(body: dict[str, Any]) -> int:
    """Azure's arrival estimate: characters / 4 over every input (tokens count one each)."""
    value = body.get("input")
    items = value if isinstance(value, list) else [value]
    return sum(
        len(item) // CHARS_PER_TOKEN + 1
        if isinstance(item, str)
        else len(item)
        if isinstance(item, list)
        else 1
        for item in items
    )


@lru_cache(maxsize=65536)
def _word_direction(word: str, size: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
    return np.random.default_rng(seed).standard_normal(size)


def embed(text: str, deployment: str, dimensions: int) -> np.ndarray:
    """A unit vector of ``dimensions`` floats for ``text``."""
    native = native_dimensions(deployment)
    # An empty text still needs a direction: it is the one word "".
    words = re.findall(r"[\w']+", text.lower()) or [""]
    vector = np.sum([_word_direction(word, native) for word in words], axis=0)[:dimensions]
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def embeddings_body(request: EmbeddingRequest) -> dict[str, Any]:
    encoding = encoding_for_model(request.deployment)
    data = []
    for index, text in enumerate(request.texts):
        vector = embed(text, request.deployment, request.dimensions)
        value: Any = (
            base64.b64encode(vector.tobytes()).decode()
            if request.encoding_format == "base64"
            else vector.tolist()
        )
        data.append({"object": "embedding", "index": index, "embedding": value})
    tokens = sum(len(encoding.encode(text, disallowed_special=())) for text in request.texts)
    return {
        "object": "list",
        "data": data,
        "model": request.deployment,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
