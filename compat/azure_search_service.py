"""``common.azure_search_service`` / ``common_new.azure_search_service`` → the
``AzureSearchService`` facade of tasks/search_service.py (Azure AI Search, or its emulator)."""

from tasks.search_service import AzureSearchService

__all__ = ["AzureSearchService"]
