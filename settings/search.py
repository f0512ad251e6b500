"""Settings of Azure AI Search (tasks/search.py and the reasoner) and its local emulator.

Mixed into :class:`settings.config.Settings`; every field is read from the environment there.
"""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, Field, SecretStr


class SearchSettings(BaseModel):
    search_endpoint: str | None = Field(None, validation_alias=AliasChoices("APP_SEARCH_ENDPOINT"))
    search_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("APP_SEARCH_API_KEY")
    )
    search_index: str = Field("documents", validation_alias=AliasChoices("APP_SEARCH_INDEX"))
