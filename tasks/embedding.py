"""Embeddings inside the embedding quota: the older ``AzureEmbeddingService`` methods as plain
functions. ``create_embedding`` sends one request; ``create_embedding_batch`` cuts any number
of texts into requests Azure accepts (at most 2,048 inputs and a bounded number of tokens each),
each inside the quota, and returns the vectors in the order of the texts.

With an embedding endpoint (the emulator, or Azure) configured::

    vectors = create_embedding_batch(["first text", "second text"], batch_size=100)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from settings import get_settings
from settings.tiktoken_offline import encoding_for_model
from tasks.errors import InvalidInput
from tasks.upstream import QuotaCall, Usage, call_within_quota

# Azure's limits for one embeddings request.
MAX_INPUTS_PER_REQUEST = 2048
MAX_INPUT_TOKENS = 8191
# OpenAI's limit on the tokens of all inputs of one request together.
MAX_REQUEST_TOKENS = 300_000
# Azure charges an embedding input on arrival from its characters (a token per four, plus one);
# the quota is charged that or the input's tokens, whichever is more.
CHARS_PER_TOKEN = 4

Vector = list[float]


class BatchCheckpoint(Protocol):
    """Answered batches kept between attempts (tasks/embedding_checkpoint.py keeps them in
    Redis by task id): a batch found here is not sent again."""

    def get(self, start: int, texts: Sequence[str]) -> list[Vector] | None: ...

    def put(self, start: int, texts: Sequence[str], vectors: Sequence[Vector]) -> None: ...


def _checked_tokens(
    texts: Sequence[str], deployment: str, truncate: bool
) -> tuple[list[str], list[int]]:
    """The texts (cut to MAX_INPUT_TOKENS when ``truncate``) and their charge in tokens."""
    encoding = encoding_for_model(deployment)
    kept, charges = [], []
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text:
            raise InvalidInput(f"texts[{index}] must be a non-empty string")
        tokens = encoding.encode(text, disallowed_special=())
        if len(tokens) > MAX_INPUT_TOKENS:
            if not truncate:
                raise InvalidInput(
                    f"texts[{index}] is {len(tokens)} tokens; the embedding model "
                    f"takes at most {MAX_INPUT_TOKENS}: shorten it or pass "
                    "truncate=True"
                )
            tokens = tokens[:MAX_INPUT_TOKENS]
        sent = encoding.decode(tokens) if len(tokens) < len(text) and truncate else text
        kept.append(sent)
        charges.append(max(len(tokens), len(sent) // CHARS_PER_TOKEN + 1))
    return kept, charges


def _send(
    texts: list[str], charge: int, deployment: str, app_id: str, dimensions: int | None = None
) -> list[Vector]:
    from openai import omit  # noqa: PLC0415 - openai is heavy; the bridge stays light

    # text-embedding-3 models shorten their vectors on request; others refuse the parameter,
    # so it is sent only when asked for.
    shape = omit if dimensions is None else dimensions

    def send(call: QuotaCall) -> Any:
        return call.client.embeddings.with_raw_response.create(
            model=call.deployment, input=texts, dimensions=shape
        )

    response = call_within_quota(
        "embedding",
        deployment,
        charge,
        app_id=app_id,
        send=send,
        usage_of=lambda answer: Usage(answer.usage.prompt_tokens),
    )
    return [item.embedding for item in sorted(response.data, key=lambda item: item.index)]


def create_embedding(
    text: str | Sequence[str],
    model: str | None = None,
    *,
    truncate: bool = False,
    app_id: str | None = None,
    dimensions: int | None = None,
) -> list[Vector]:
    """Vectors for one text or a list of texts, in one request (so at most 2,048 texts): a list
    of vectors either way, as the older service returned. ``model`` is the deployment;
    ``dimensions`` shortens text-embedding-3 vectors."""
    settings = get_settings()
    deployment = model or settings.embedding_engine
    texts = [text] if isinstance(text, str) else list(text)
    if not 1 <= len(texts) <= MAX_INPUTS_PER_REQUEST:
        raise InvalidInput(
            f"create_embedding takes 1 to {MAX_INPUTS_PER_REQUEST} texts, got "
            f"{len(texts)}: use create_embedding_batch for more"
        )
    texts, charges = _checked_tokens(texts, deployment, truncate)
    return _send(texts, sum(charges), deployment, app_id or settings.app_name, dimensions)


def plan_batches(charges: Sequence[int], max_count: int, max_tokens: int) -> Iterator[range]:
    """Consecutive index ranges of at most ``max_count`` items and ``max_tokens`` charge each
    (an item larger than ``max_tokens`` on its own still gets a batch)."""
    start, total = 0, 0
    for index, charge in enumerate(charges):
        if index > start and (index - start >= max_count or total + charge > max_tokens):
            yield range(start, index)
            start, total = index, 0
        total += charge
    if start < len(charges):
        yield range(start, len(charges))


def create_embedding_batch(
    texts: Sequence[str],
    model: str | None = None,
    batch_size: int = MAX_INPUTS_PER_REQUEST,
    *,
    truncate: bool = False,
    app_id: str | None = None,
    dimensions: int | None = None,
    checkpoint: BatchCheckpoint | None = None,
) -> list[Vector]:
    """Vectors for any number of texts, in their order, sent ``batch_size`` texts at most (and
    never more tokens than one request or the embedding TPM allow) at a time.

    With a ``checkpoint``, each answered batch is kept there and a batch already kept is not
    sent again: a call interrupted by a quota refusal, called again, resumes where it stopped."""
    if not 1 <= batch_size <= MAX_INPUTS_PER_REQUEST:
        raise InvalidInput(
            f"batch_size must be from 1 to {MAX_INPUTS_PER_REQUEST}, got {batch_size}"
        )
    settings = get_settings()
    deployment = model or settings.embedding_engine
    texts, charges = _checked_tokens(list(texts), deployment, truncate)
    max_tokens = min(MAX_REQUEST_TOKENS, settings.embedding_tpm_quota)
    vectors: list[Vector] = []
    for batch in plan_batches(charges, batch_size, max_tokens):
        batch_texts = texts[batch.start : batch.stop]
        kept = checkpoint.get(batch.start, batch_texts) if checkpoint is not None else None
        if kept is None:
            kept = _send(
                batch_texts,
                sum(charges[batch.start : batch.stop]),
                deployment,
                app_id or settings.app_name,
                dimensions,
            )
            if checkpoint is not None:
                checkpoint.put(batch.start, batch_texts, kept)
        vectors += kept
    return vectors
