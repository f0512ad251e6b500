"""Azure AI Search as plain functions: the real ``azure-search-documents`` SDK, built from settings.

Where requests go: ``APP_SEARCH_ENDPOINT``, or, unset, the embedded emulator (emulators/search)
at ``<EMULATOR_HOST:PORT>/search``, exactly as the OpenAI clients fall back to the emulator.
How they authenticate: ``APP_SEARCH_API_KEY`` (the ``api-key`` header); the emulator's key when
the emulator stands in; otherwise Entra ID (``DefaultAzureCredential``).

One ``SearchClient`` per index per process (the SDK client is thread-safe and keeps its
connection pool), one ``SearchIndexClient`` per process. Every result is plain JSON (dicts and
lists), so a Celery task can return it as it is.

azure-core's errors are mapped onto tasks.errors here and nowhere else: throttling (429, 503),
other 5xx, timeouts and lost connections are transient; any other 4xx is permanent, with the
setting or argument to check named.

With Azure AI Search (or the emulator's ``/search``) configured::

    ensure_index("docs", text_fields=["title", "content"], vector_dimensions=1024)
    upload_documents("docs", [{"id": "1", "title": "AI", "content": "..."}])
    search_documents("docs", "machine learning", top=5)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from settings import EMULATOR_DEV_KEY, Settings, get_settings
from settings.search import SEARCH_EMULATOR_PATH
from tasks.errors import InvalidInput, PermanentError, TransientError

if TYPE_CHECKING:  # the SDK is imported on first use: the bridge imports tasks/ and stays light
    from azure.search.documents import SearchClient
    from azure.search.documents.indexes import SearchIndexClient

# Azure's limits for one docs/index request: 1,000 actions and 16 MB of JSON.
MAX_BATCH_DOCUMENTS = 1000
MAX_BATCH_BYTES = 16 * 1024 * 1024
# Azure's RRF constant for hybrid ranking (documented as k = 60).
RRF_K = 60
KEY_FIELD = "id"
VECTOR_FIELD = "content_vector"
VECTOR_PROFILE = "conduit-hnsw-profile"
VECTOR_ALGORITHM = "conduit-hnsw"
# Statuses worth another try: timeout, throttled, and the service's own failures.
TRANSIENT_STATUSES = frozenset({408, 429})

T = TypeVar("T")


# --- clients -------------------------------------------------------------------------------------


def search_endpoint(settings: Settings) -> tuple[str, str | None]:
    """The service URL and its API key (None: Entra ID)."""
    if settings.search_endpoint is None:
        key = settings.emulator_api_key
        return (
            settings.emulator_url + SEARCH_EMULATOR_PATH,
            key.get_secret_value() if key else EMULATOR_DEV_KEY,
        )
    key = settings.search_api_key
    return settings.search_endpoint, key.get_secret_value() if key else None


def _credential(api_key: str | None) -> Any:
    if api_key is not None:
        from azure.core.credentials import AzureKeyCredential

        return AzureKeyCredential(api_key)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


# azure-search-documents 12 works out each model class's fields on its first instantiation and
# stores them on the class while another thread may be reading the class's dict: two threads of
# a worker building their first IndexDocumentsBatch at once fail with "dictionary changed size
# during iteration". Every model class is instantiated once, under a lock, before any client is
# used; SDK versions laid out otherwise are left as they are.
_SDK_MODEL_MODULES = (
    "azure.search.documents.models._models",
    "azure.search.documents.indexes.models._models",
)


@lru_cache(maxsize=1)
def _prime_sdk_models() -> int:
    """Work out every SDK model class's fields now, in one thread; the number of classes."""
    import importlib

    try:
        from azure.search.documents._utils.model_base import Model
    except ImportError:
        return 0
    primed = 0
    for name in _SDK_MODEL_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Model) and value is not Model:
                value.__new__(value)
                primed += 1
    return primed


_prime_lock = threading.Lock()


def _primed() -> None:
    with _prime_lock:  # lru_cache alone would let two threads run it at once
        _prime_sdk_models()


@lru_cache(maxsize=64)
def _search_client(endpoint: str, api_key: str | None, index: str, timeout_s: float) -> Any:
    from azure.search.documents import SearchClient

    _primed()
    return SearchClient(
        endpoint,
        index,
        _credential(api_key),
        connection_timeout=timeout_s,
        read_timeout=timeout_s,
        # Conduit retries (the Celery tasks), so the SDK's own retries would only hide failures.
        retry_total=0,
    )


@lru_cache(maxsize=8)
def _index_client(endpoint: str, api_key: str | None, timeout_s: float) -> Any:
    from azure.search.documents.indexes import SearchIndexClient

    _primed()
    return SearchIndexClient(
        endpoint,
        _credential(api_key),
        connection_timeout=timeout_s,
        read_timeout=timeout_s,
        retry_total=0,
    )


def search_client(index: str) -> SearchClient:
    """This process's client for ``index`` (the same object on every call)."""
    settings = get_settings()
    endpoint, api_key = search_endpoint(settings)
    return _search_client(endpoint, api_key, _index_name(index), settings.search_timeout_s)


def index_client() -> SearchIndexClient:
    settings = get_settings()
    endpoint, api_key = search_endpoint(settings)
    return _index_client(endpoint, api_key, settings.search_timeout_s)


def _index_name(index: str | None) -> str:
    name = index or get_settings().search_index
    if not isinstance(name, str) or not name:
        raise InvalidInput("index must be a non-empty index name (or set APP_SEARCH_INDEX)")
    return name


# --- errors --------------------------------------------------------------------------------------


def _as_conduit_error(error: Exception, what: str) -> Exception:  # noqa: PLR0911 - flat reads best
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(error, (ServiceRequestError, ServiceResponseError)):
        return TransientError(f"cannot reach Azure AI Search for {what}: {error}")
    if isinstance(error, ClientAuthenticationError):
        return PermanentError(
            f"Azure AI Search refused our credentials for {what} "
            "(check APP_SEARCH_API_KEY / APP_SEARCH_ENDPOINT)"
        )
    if isinstance(error, ResourceNotFoundError):
        return PermanentError(f"{what}: not found ({_message(error)})")
    if isinstance(error, HttpResponseError):
        status = error.status_code or 0
        detail = f"Azure AI Search answered {status} to {what}: {_message(error)}"
        if status in TRANSIENT_STATUSES or status >= 500:
            return TransientError(detail, _retry_after_s(error))
        if status == 403:
            return PermanentError(f"{detail} (check APP_SEARCH_API_KEY / APP_SEARCH_ENDPOINT)")
        return PermanentError(detail)
    return error


def _message(error: Any) -> str:
    inner = getattr(error, "error", None)
    message = getattr(inner, "message", None) or getattr(error, "message", None) or str(error)
    return str(message).splitlines()[0]


def _retry_after_s(error: Any) -> float | None:
    response = getattr(error, "response", None)
    value: Any = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _calling(what: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except Exception as error:
        mapped = _as_conduit_error(error, what)
        if mapped is error:
            raise
        raise mapped from error


# --- index management ----------------------------------------------------------------------------


def index_definition(
    name: str,
    text_fields: Sequence[str] = ("title", "content"),
    vector_dimensions: int | None = None,
    filterable_fields: Sequence[str] = (),
    int_fields: Sequence[str] = (),
) -> Any:
    """An index: ``id`` key, searchable text fields, filterable string fields, sortable integer
    fields and, with ``vector_dimensions``, the vector field ``content_vector`` with an HNSW
    profile (cosine)."""
    from azure.search.documents.indexes.models import (
        HnswAlgorithmConfiguration,
        HnswParameters,
        SearchableField,
        SearchField,
        SearchFieldDataType,
        SearchIndex,
        SimpleField,
        VectorSearch,
        VectorSearchProfile,
    )

    fields: list[Any] = [
        SimpleField(name=KEY_FIELD, type=SearchFieldDataType.STRING, key=True, filterable=True)
    ]
    fields += [SearchableField(name=field) for field in text_fields]
    fields += [
        SimpleField(name=field, type=SearchFieldDataType.STRING, filterable=True, facetable=True)
        for field in filterable_fields
    ]
    fields += [
        SimpleField(name=field, type=SearchFieldDataType.INT32, filterable=True, sortable=True)
        for field in int_fields
    ]
    vector_search = None
    if vector_dimensions is not None:
        fields.append(
            SearchField(
                name=VECTOR_FIELD,
                # SearchFieldDataType.Collection(SINGLE): the EDM name, as the SDK would build it.
                type="Collection(Edm.Single)",
                searchable=True,
                vector_search_dimensions=vector_dimensions,
                vector_search_profile_name=VECTOR_PROFILE,
            )
        )
        vector_search = VectorSearch(
            algorithms=[
                HnswAlgorithmConfiguration(
                    name=VECTOR_ALGORITHM, parameters=HnswParameters(metric="cosine")
                )
            ],
            profiles=[
                VectorSearchProfile(
                    name=VECTOR_PROFILE, algorithm_configuration_name=VECTOR_ALGORITHM
                )
            ],
        )
    return SearchIndex(name=name, fields=fields, vector_search=vector_search)


def ensure_index(
    name: str,
    text_fields: Sequence[str] = ("title", "content"),
    vector_dimensions: int | None = None,
    filterable_fields: Sequence[str] = (),
    int_fields: Sequence[str] = (),
) -> dict[str, Any]:
    """Create the index, or update it to have these fields (Azure adds new fields in place and
    refuses to change existing ones). Returns the index's definition as the service holds it."""
    definition = index_definition(
        name, text_fields, vector_dimensions, filterable_fields, int_fields
    )
    index = _calling(
        f"create or update index {name!r}",
        lambda: index_client().create_or_update_index(definition),
    )
    return dict(index.as_dict())


def delete_index(name: str) -> None:
    _calling(f"delete index {name!r}", lambda: index_client().delete_index(name))


def list_indexes() -> list[str]:
    return _calling("list indexes", lambda: list(index_client().list_index_names()))


# --- documents -----------------------------------------------------------------------------------


def plan_upload_batches(
    documents: Sequence[dict[str, Any]],
    max_documents: int = MAX_BATCH_DOCUMENTS,
    max_bytes: int = MAX_BATCH_BYTES,
) -> Iterator[range]:
    """Consecutive index ranges of at most ``max_documents`` documents and ``max_bytes`` of JSON
    (a document larger than ``max_bytes`` alone gets its own batch, which Azure will refuse)."""
    start, size = 0, 0
    # Leave room for the request's envelope and the "@search.action" of every document.
    budget = max_bytes - 1024
    for index, document in enumerate(documents):
        length = len(json.dumps(document, ensure_ascii=False).encode()) + 40
        if index > start and (index - start >= max_documents or size + length > budget):
            yield range(start, index)
            start, size = index, 0
        size += length
    if start < len(documents):
        yield range(start, len(documents))


def _indexing_results(results: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {
            "key": result.key,
            "succeeded": bool(result.succeeded),
            "status_code": result.status_code,
            "error_message": result.error_message,
        }
        for result in results
    ]


def _index_actions(
    index: str, documents: Sequence[dict[str, Any]], action: str
) -> list[dict[str, Any]]:
    if not isinstance(documents, (list, tuple)) or not all(
        isinstance(document, dict) for document in documents
    ):
        raise InvalidInput("documents must be a list of JSON objects")
    client = search_client(index)
    send = {
        "upload": client.upload_documents,
        "merge": client.merge_documents,
        "mergeOrUpload": client.merge_or_upload_documents,
        "delete": client.delete_documents,
    }[action]
    results: list[dict[str, Any]] = []
    for batch in plan_upload_batches(documents):
        part = list(documents[batch.start : batch.stop])
        sent = _calling(
            f"{action} of {len(part)} documents into index {index!r}",
            lambda part=part: send(part),  # type: ignore[misc]
        )
        results += _indexing_results(sent)
    return results


def upload_documents(
    index: str, documents: Sequence[dict[str, Any]], *, merge: bool = True
) -> list[dict[str, Any]]:
    """Upload documents (merge-or-upload by default: a document already there keeps the fields
    not given), in batches Azure accepts. One result per document, ``{key, succeeded,
    status_code, error_message}``: a document the service refused is reported, not raised."""
    return _index_actions(index, documents, "mergeOrUpload" if merge else "upload")


def delete_documents(index: str, documents: Sequence[dict[str, Any] | str]) -> list[dict[str, Any]]:
    """Delete documents given whole or by key; one result per document, as upload_documents."""
    as_documents = [
        document if isinstance(document, dict) else {KEY_FIELD: document} for document in documents
    ]
    return _index_actions(index, as_documents, "delete")


def _results(paged: Any, include_total_count: bool) -> dict[str, Any]:
    documents = []
    for result in paged:
        document = {
            name: value
            for name, value in result.items()
            if not name.startswith("@search.") or name == "@search.score"
        }
        documents.append(document)
    answer: dict[str, Any] = {"results": documents}
    if include_total_count:
        answer["count"] = paged.get_count()
    return answer


def search_documents(
    index: str,
    search_text: str = "*",
    *,
    top: int | None = None,
    select: Sequence[str] | None = None,
    filter: str | None = None,
    order_by: Sequence[str] | str | None = None,
    include_total_count: bool = False,
    skip: int | None = None,
    search_fields: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Full-text search (BM25): ``{"results": [document + "@search.score"], "count"?}``."""
    client = search_client(index)
    orders = [order_by] if isinstance(order_by, str) else order_by

    def call() -> dict[str, Any]:
        paged = client.search(
            search_text,
            top=top,
            skip=skip,
            select=list(select) if select else None,
            filter=filter,
            order_by=list(orders) if orders else None,
            include_total_count=include_total_count,
            search_fields=list(search_fields) if search_fields else None,
        )
        return _results(paged, include_total_count)

    return _calling(f"search of index {index!r}", call)


def _vector_query(vector: Sequence[float], vector_field: str, k: int) -> Any:
    from azure.search.documents.models import VectorizedQuery

    if not vector or not all(isinstance(value, (int, float)) for value in vector):
        raise InvalidInput("vector must be a non-empty list of numbers")
    if k < 1:
        raise InvalidInput(f"k must be at least 1, got {k}")
    return VectorizedQuery(
        vector=[float(value) for value in vector], k_nearest_neighbors=k, fields=vector_field
    )


def vector_search(
    index: str,
    vector: Sequence[float],
    vector_field: str = VECTOR_FIELD,
    *,
    k: int = 10,
    select: Sequence[str] | None = None,
    filter: str | None = None,
) -> dict[str, Any]:
    """The ``k`` nearest documents to ``vector`` (cosine): ``{"results": [...]}``, nearest first."""
    return _search_with_vector(index, None, vector, vector_field, k, k, select, filter)


def hybrid_search(
    index: str,
    text: str,
    vector: Sequence[float],
    vector_field: str = VECTOR_FIELD,
    *,
    top: int = 10,
    k: int = 50,
    select: Sequence[str] | None = None,
    filter: str | None = None,
) -> dict[str, Any]:
    """Text and vector in one query, fused by Azure's Reciprocal Rank Fusion (each document
    scores the sum of ``1 / (60 + rank)`` over the rankings it appears in)."""
    return _search_with_vector(index, text, vector, vector_field, k, top, select, filter)


def _search_with_vector(  # noqa: PLR0917 - the two public forms' arguments, passed through
    index: str,
    text: str | None,
    vector: Sequence[float],
    vector_field: str,
    k: int,
    top: int,
    select: Sequence[str] | None,
    filter: str | None,
) -> dict[str, Any]:
    """One query with a vector, and with text too (hybrid) when ``text`` is given."""
    client = search_client(index)
    query = _vector_query(vector, vector_field, k)
    what = "hybrid search" if text is not None else "vector search"

    def call() -> dict[str, Any]:
        paged = client.search(
            text,
            vector_queries=[query],
            top=top,
            select=list(select) if select else None,
            filter=filter,
        )
        return _results(paged, False)

    return _calling(f"{what} of index {index!r}", call)


def get_document(
    index: str, key: str, selected_fields: Sequence[str] | None = None
) -> dict[str, Any]:
    """One document by key; a key the index does not hold is a PermanentError naming it."""
    client = search_client(index)
    fields = list(selected_fields) if selected_fields else None
    document = _calling(
        f"get document {key!r} of index {index!r}",
        lambda: client.get_document(key, selected_fields=fields),
    )
    return dict(document)


def get_document_count(index: str) -> int:
    client = search_client(index)
    return int(_calling(f"count of index {index!r}", client.get_document_count))
