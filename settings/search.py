"""Settings of Azure AI Search (tasks/search.py and the reasoner) and its local emulator.

Mixed into :class:`settings.config.Settings`; every field is read from the environment there.
"""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, Field, SecretStr, model_validator

# Where the embedded emulator serves the Search REST API, beside the OpenAI routes.
SEARCH_EMULATOR_PATH = "/search"


class SearchSettings(BaseModel):
    # Unset: the embedded emulator (emulators/search) at <emulator URL>/search, as for OpenAI.
    search_endpoint: str | None = Field(None, validation_alias=AliasChoices("APP_SEARCH_ENDPOINT"))
    # Unset with a real endpoint: Entra ID (DefaultAzureCredential).
    search_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("APP_SEARCH_API_KEY")
    )
    search_index: str = Field("documents", validation_alias=AliasChoices("APP_SEARCH_INDEX"))
    # The SDK's default is 30 s for a connection and 300 s for a read; a query that takes longer
    # than this is better retried by the task than waited for in a worker slot.
    search_timeout_s: float = Field(
        30.0, gt=0, validation_alias=AliasChoices("APP_SEARCH_TIMEOUT_SECONDS")
    )
    # Vectors of index_texts: unset, the embedding deployment's native size (3,072 for
    # text-embedding-3-large). text-embedding-3 models shorten vectors on request; 1,024 keeps
    # most of their retrieval quality at a third of the index size (OpenAI's MTEB figures).
    search_vector_dimensions: int | None = Field(
        None, ge=1, le=4096, validation_alias=AliasChoices("APP_SEARCH_VECTOR_DIMENSIONS")
    )
    # Chunks of index_texts, in tokens of the embedding model: a few paragraphs, small enough
    # that a passage cited by the reasoner is about one thing; the overlap keeps a sentence cut
    # at a boundary whole in one of the two chunks.
    search_chunk_tokens: int = Field(
        400, ge=16, le=8000, validation_alias=AliasChoices("APP_SEARCH_CHUNK_TOKENS")
    )
    search_chunk_overlap_tokens: int = Field(
        40, ge=0, le=4000, validation_alias=AliasChoices("APP_SEARCH_CHUNK_OVERLAP_TOKENS")
    )
    # Chunks one indexing task embeds and uploads: one embeddings request and one upload each,
    # small enough that a worker killed midway loses only a few seconds of work.
    search_index_batch_size: int = Field(
        50, ge=1, le=1000, validation_alias=AliasChoices("APP_SEARCH_INDEX_BATCH_SIZE")
    )
    # The emulator keeps each index in an SQLite file here (persists across restarts).
    search_emulator_data_dir: str = Field(
        ".data/search", validation_alias=AliasChoices("EMULATOR_SEARCH_DATA_DIR")
    )

    @model_validator(mode="after")
    def _overlap_below_chunk(self) -> SearchSettings:
        if self.search_chunk_overlap_tokens >= self.search_chunk_tokens:
            raise ValueError(
                "APP_SEARCH_CHUNK_OVERLAP_TOKENS must be below APP_SEARCH_CHUNK_TOKENS "
                f"({self.search_chunk_tokens})"
            )
        return self
