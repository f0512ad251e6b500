"""``common.azure_embedding_service`` → ``AzureEmbeddingService``, the older asyncio class over
tasks/embedding.py, inside the shared embedding quota.

    embedding_service = AzureEmbeddingService(app_id="my_app")
    embedding = await embedding_service.create_embedding("Hello world")      # [[0.01, ...]]
    embeddings = await embedding_service.create_embedding_batch(texts, batch_size=100)

``token_counter_url`` is accepted and ignored (quota lives in Redis now).
"""

from __future__ import annotations

from collections.abc import Sequence

import tiktoken

from compat.retrying import with_retries
from compat.threads import run_blocking
from settings import get_settings
from settings.tiktoken_offline import encoding_for_model
from tasks import embedding
from tasks.token_estimates import text_tokens

# The older service's defaults.
DEFAULT_BATCH_SIZE = 100
DEFAULT_MAX_RETRIES = 3

Vector = list[float]


class AzureEmbeddingService:
    """Embeddings for one app (the quota's ``app_id``) and one default deployment."""

    def __init__(
        self,
        model: str | None = None,
        app_id: str | None = None,
        token_counter_url: str | None = None,
    ) -> None:
        settings = get_settings()
        self.model = model or settings.embedding_engine
        self.app_id = app_id or settings.app_name

    async def create_embedding(
        self, text: str | Sequence[str], model: str | None = None
    ) -> list[Vector]:
        """Vectors for one text or a list (one request): a list of vectors either way."""
        return await with_retries(
            lambda: run_blocking(
                embedding.create_embedding, text, model or self.model, app_id=self.app_id
            ),
            DEFAULT_MAX_RETRIES,
        )

    async def create_embedding_batch(
        self, texts: Sequence[str], model: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> list[Vector]:
        """Vectors for any number of texts, in their order, ``batch_size`` texts a request."""
        return await with_retries(
            lambda: run_blocking(
                embedding.create_embedding_batch,
                list(texts),
                model or self.model,
                batch_size,
                app_id=self.app_id,
            ),
            DEFAULT_MAX_RETRIES,
        )

    def _estimate_tokens(self, texts: str | Sequence[str], model: str | None = None) -> int:
        """Tokens the texts are counted as, before sending (tiktoken, offline)."""
        items = [texts] if isinstance(texts, str) else list(texts)
        return sum(text_tokens(items, model or self.model))

    def _get_encoding_for_model(self, model: str | None = None) -> tiktoken.Encoding:
        """The tokenizer of an embedding model: cl100k_base, as the older service said."""
        return encoding_for_model(model or self.model)
