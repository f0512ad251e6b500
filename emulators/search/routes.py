"""The Azure AI Search REST routes, as a Flask blueprint mounted at ``/search`` (settings'
SEARCH_EMULATOR_PATH), so ``SearchClient("http://127.0.0.1:8700/search", ...)`` talks to it
unchanged.

Both URL forms the service accepts are served: OData (``/indexes('docs')/docs('1')``, what the
SDK sends) and plain (``/indexes/docs/docs/1``). Every route needs the ``api-key`` header (or an
Entra ID bearer token, taken on trust in dev): EMULATOR_API_KEY when it is set, else any
non-empty key. Indexes live in :class:`SearchService`, one SQLite file each under
EMULATOR_SEARCH_DATA_DIR.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from emulators.search.query import DEFAULT_PAGE_SIZE, parse_request, run_search
from emulators.search.schema import (
    SearchNotFound,
    SearchPayloadTooLarge,
    SearchRequestError,
    SearchUnauthorized,
    parse_index,
)
from emulators.search.store import IndexStore
from settings import Settings
from settings.search import SEARCH_EMULATOR_PATH

# Azure's limits on one docs/index request.
MAX_INDEX_ACTIONS = 1000
MAX_INDEX_BYTES = 16 * 1024 * 1024
STORE_SUFFIX = ".sqlite3"

search_api = Blueprint("search", __name__)

_INDEX_PATH = re.compile(
    r"^indexes(?:\('(?P<odata>(?:[^']|'')+)'\)|/(?P<plain>[^/]+))(?P<rest>/.*)?$"
)
_DOC_PATH = re.compile(r"^/docs(?:\('(?P<odata>(?:[^']|'')+)'\)|/(?P<plain>[^/]+))$")
# "docs/search.index" and the plain "docs/index" are the same operation; likewise search.
_OPERATIONS = {
    "/docs/search.index": "index",
    "/docs/index": "index",
    "/docs/search.post.search": "search",
    "/docs/search": "search",
    "/docs/$count": "count",
    "/docs": "search",
}


class SearchService:
    """Every index of the emulator: created, opened from disk at start, deleted."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.indexes: dict[str, IndexStore] = {}
        for path in sorted(data_dir.glob(f"*{STORE_SUFFIX}")):
            store = IndexStore(path)
            self.indexes[store.schema.name] = store

    def get(self, name: str) -> IndexStore:
        with self.lock:
            store = self.indexes.get(name)
        if store is None:
            raise SearchNotFound(f"No index with the name '{name}' was found in the service.")
        return store

    def create_or_update(self, body: Any, name: str | None) -> tuple[IndexStore, bool]:
        schema = parse_index(body, name)
        with self.lock:
            store = self.indexes.get(schema.name)
            if store is not None:
                store.update_schema(schema)
                return store, False
            store = IndexStore(self.data_dir / f"{schema.name}{STORE_SUFFIX}", schema)
            self.indexes[schema.name] = store
            return store, True

    def delete(self, name: str) -> None:
        with self.lock:
            store = self.indexes.pop(name, None)
        if store is None:
            raise SearchNotFound(f"No index with the name '{name}' was found in the service.")
        store.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{store.path}{suffix}").unlink(missing_ok=True)


def init_search(app: Flask, settings: Settings) -> None:
    """Serve the Search API on ``app`` at SEARCH_EMULATOR_PATH, with the indexes on disk."""
    app.extensions["search"] = SearchService(Path(settings.search_emulator_data_dir))
    app.register_blueprint(search_api, url_prefix=SEARCH_EMULATOR_PATH)


def _service() -> SearchService:
    return current_app.extensions["search"]


@search_api.before_request
def _authenticate() -> None:
    configured = current_app.extensions["emulator"].settings.emulator_api_key
    presented = request.headers.get("api-key", "")
    bearer = request.headers.get("Authorization", "").startswith("Bearer ")
    if not presented and not bearer:
        raise SearchUnauthorized(presented=False)
    if configured is not None and not bearer and presented != configured.get_secret_value():
        raise SearchUnauthorized(presented=True)


def _body() -> Any:
    if (request.content_length or 0) > MAX_INDEX_BYTES:
        raise SearchPayloadTooLarge(
            f"The request is over the {MAX_INDEX_BYTES} byte limit; send fewer documents."
        )
    try:
        return json.loads(request.get_data() or b"null")
    except ValueError:
        raise SearchRequestError("The request is invalid: its body is not valid JSON.") from None


def _unquote(match: re.Match[str]) -> str:
    return (match.group("odata") or "").replace("''", "'") or match.group("plain")


def _definition(store: IndexStore) -> dict[str, Any]:
    return {"@odata.etag": f'"{id(store.schema):x}"', **store.schema.definition}


@search_api.route("/indexes", methods=["GET", "POST"])
def indexes() -> Any:
    service = _service()
    if request.method == "POST":
        body = _body()
        name = body.get("name") if isinstance(body, dict) else None
        if isinstance(name, str) and name in service.indexes:
            raise SearchRequestError(f"Cannot create index '{name}' because it already exists.")
        store, _ = service.create_or_update(body, None)
        return jsonify(_definition(store)), 201
    with service.lock:
        stores = list(service.indexes.values())
    return jsonify(value=[_definition(store) for store in stores])


@search_api.route("/<path:path>", methods=["GET", "PUT", "POST", "DELETE"])
def index_routes(path: str) -> Any:
    match = _INDEX_PATH.match(path)
    if match is None:
        raise SearchNotFound(f"The resource '/{path}' does not exist in the Search API.")
    name, rest = _unquote(match), match.group("rest") or ""
    service = _service()
    if not rest:
        return _index_resource(service, name)
    operation = _OPERATIONS.get(rest)
    store = service.get(name)
    if operation == "index" and request.method == "POST":
        return _index_documents(store)
    if operation == "search" and request.method in {"GET", "POST"}:
        return _search(store)
    if operation == "count" and request.method == "GET":
        return Response(str(store.count()), content_type="application/json")
    document = _DOC_PATH.match(rest)
    if document is not None and request.method == "GET":
        return _lookup(store, _unquote(document))
    raise SearchNotFound(f"The resource '/{path}' does not exist in the Search API.")


def _index_resource(service: SearchService, name: str) -> Any:
    if request.method == "GET":
        return jsonify(_definition(service.get(name)))
    if request.method == "PUT":
        store, created = service.create_or_update(_body(), name)
        return jsonify(_definition(store)), 201 if created else 200
    if request.method == "DELETE":
        service.delete(name)
        return Response(status=204)
    raise SearchRequestError(f"The method {request.method} is not allowed on an index.")


def _index_documents(store: IndexStore) -> Any:
    body = _body()
    actions = body.get("value") if isinstance(body, dict) else None
    if not isinstance(actions, list) or not all(isinstance(item, dict) for item in actions):
        raise SearchRequestError("The request is invalid: 'value' must be a list of actions.")
    if not actions:
        raise SearchRequestError("The request is invalid: the batch holds no actions.")
    if len(actions) > MAX_INDEX_ACTIONS:
        raise SearchRequestError(
            f"The request is invalid: a batch may hold at most {MAX_INDEX_ACTIONS} actions; "
            f"this one holds {len(actions)}."
        )
    results = store.index(actions)
    status = 200 if all(result["status"] for result in results) else 207
    return jsonify(value=results), status


_GET_PARAMETERS = {
    "search": "search",
    "$filter": "filter",
    "$orderby": "orderby",
    "$select": "select",
    "$top": "top",
    "$skip": "skip",
    "$count": "count",
    "searchMode": "searchMode",
    "searchFields": "searchFields",
    "queryType": "queryType",
}


def _search(store: IndexStore) -> Any:
    if request.method == "POST":
        body = _body()
        if not isinstance(body, dict):
            raise SearchRequestError("The request body must be a JSON object.")
    else:
        body = {
            name: request.args[parameter]
            for parameter, name in _GET_PARAMETERS.items()
            if parameter in request.args
        }
    answer = run_search(store, parse_request(body))
    if answer.pop("_more"):
        next_page = {**body, "skip": int(body.get("skip") or 0) + DEFAULT_PAGE_SIZE}
        answer["@odata.nextLink"] = request.base_url
        answer["@search.nextPageParameters"] = next_page
    return jsonify(answer)


def _lookup(store: IndexStore, key: str) -> Any:
    document = store.get(key)
    if document is None:
        raise SearchNotFound(f"Document with key '{key}' was not found.")
    selected = request.args.get("$select")
    if selected and selected.strip() != "*":
        names = [name.strip() for name in selected.split(",") if name.strip()]
        for name in names:
            if store.schema.field(name) is None:
                raise SearchRequestError(
                    f"Invalid expression: Could not find a property named '{name}' on type "
                    "'search.document'.\r\nParameter name: $select"
                )
        document = {name: document.get(name) for name in names}
    else:
        retrievable = {field.name for field in store.schema.fields if field.retrievable}
        document = {name: value for name, value in document.items() if name in retrievable}
    return jsonify(document)
