"""The older library's ``AzureSearchService``: its async method names, arguments and return
shapes, delegating to tasks/search.py, so older code runs with only its import changed.

    >>> service = AzureSearchService(index_name="my-documents", app_id="my_app")
    >>> await service.upload_documents([{"id": "1", "title": "AI Overview", "content": "..."}])
    >>> results = await service.search_documents("machine learning", top=5)
    >>> service.close()

The SDK is synchronous; each call runs in a worker thread (``asyncio.to_thread``) so the caller's
event loop keeps serving while Azure answers. The SDK clients are the process's shared ones
(tasks/search.py), so ``close`` ends this service, not connections other code is using.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from settings import get_logger
from tasks import search

log = get_logger(__name__)
T = TypeVar("T")


class _Closed:
    """What ``close`` returns: the older README calls ``close()`` without ``await``, other older
    code awaits it; both work, and an un-awaited one warns about nothing."""

    def __await__(self) -> Iterator[None]:
        return iter(())


class AzureSearchService:
    """Upload, text search, vector search, get, delete and count on one index."""

    def __init__(self, index_name: str, app_id: str) -> None:
        if not index_name:
            raise ValueError("AzureSearchService needs an index_name")
        self.index_name = index_name
        self.app_id = app_id
        self._closed = False

    async def _run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._closed:
            raise RuntimeError(
                f"AzureSearchService for index {self.index_name!r} was closed; "
                "create a new one to keep searching."
            )
        return await asyncio.to_thread(function, *args, **kwargs)

    async def upload_documents(self, documents: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Upload or update documents; one ``{key, succeeded, status_code, error_message}`` each."""
        return await self._run(search.upload_documents, self.index_name, list(documents))

    async def search_documents(
        self,
        search_text: str,
        top: int = 10,
        select: Sequence[str] | None = None,
        filter_expression: str | None = None,
        order_by: Sequence[str] | str | None = None,
    ) -> list[dict[str, Any]]:
        """The matching documents, best first, each with its ``@search.score``."""
        answer = await self._run(
            search.search_documents,
            self.index_name,
            search_text,
            top=top,
            select=select,
            filter=filter_expression,
            order_by=order_by,
        )
        return answer["results"]

    async def vector_search(
        self,
        vector: Sequence[float],
        vector_field: str = search.VECTOR_FIELD,
        top: int = 10,
        select: Sequence[str] | None = None,
        filter_expression: str | None = None,
    ) -> list[dict[str, Any]]:
        """The ``top`` nearest documents to ``vector``, nearest first."""
        answer = await self._run(
            search.vector_search,
            self.index_name,
            vector,
            vector_field=vector_field,
            k=top,
            select=select,
            filter=filter_expression,
        )
        return answer["results"]

    async def get_document(
        self, document_key: str, selected_fields: Sequence[str] | None = None
    ) -> dict[str, Any]:
        return await self._run(search.get_document, self.index_name, document_key, selected_fields)

    async def delete_documents(
        self, documents: Sequence[dict[str, Any] | str]
    ) -> list[dict[str, Any]]:
        return await self._run(search.delete_documents, self.index_name, list(documents))

    async def get_document_count(self) -> int:
        return await self._run(search.get_document_count, self.index_name)

    def close(self) -> _Closed:
        """End this service; later calls raise. Awaiting the result is allowed, not needed."""
        self._closed = True
        return _Closed()
