"""One index on disk: an SQLite file holding its definition, its documents and an FTS5 table of
their searchable text (BM25), with the documents and vectors also held in memory for filters and
exact nearest-neighbour search in numpy.

Why both: SQLite makes the index survive a restart and gives BM25 for free (FTS5 is in the
standard library's SQLite); filters and vector search run over every document anyway at dev
scale, so they read memory rather than parse JSON from disk on every query. Every method takes
the store's lock: Werkzeug serves each request on its own thread.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emulators.search.schema import (
    IndexSchema,
    SearchRequestError,
    check_update,
    check_value,
    parse_index,
)

# Azure: a key holds letters, digits, underscore, dash and equal sign, up to 1,024 characters.
DOCUMENT_KEY = re.compile(r"^[A-Za-z0-9_\-=]{1,1024}$")
ACTIONS = {"upload", "merge", "mergeOrUpload", "delete"}
# Azure's bound on how many text matches take part in a hybrid query's fusion.
MAX_TEXT_RECALL = 1000


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def fts_query(search_text: str, mode: str) -> str | None:
    """Azure's simple query syntax as an FTS5 MATCH expression; None matches every document.

    Terms and ``"phrases"``; ``+term`` required, ``-term`` excluded, ``term*`` a prefix; ``|``
    is "or". ``searchMode`` ``any`` (Azure's default) matches a document holding any optional
    term, ``all`` one holding every term. Each term goes to FTS5 quoted, so no input can inject
    FTS5 operators.
    """
    required, optional, excluded = [], [], []
    for match in re.finditer(r'([+\-!]?)("([^"]*)"|[^\s"|]+)', search_text):
        sign, whole, phrase = match.group(1), match.group(2), match.group(3)
        text = phrase if phrase is not None else whole
        prefix = phrase is None and text.endswith("*") and len(text) > 1
        words = re.findall(r"\w+", text.rstrip("*"))
        if not words:
            continue
        term = '"' + " ".join(words) + '"' + ("*" if prefix else "")
        if sign in {"-", "!"}:
            excluded.append(term)
        elif sign == "+" or mode == "all":
            required.append(term)
        else:
            optional.append(term)
    if not (required or optional):
        if not excluded:
            return None if search_text.strip() in {"", "*"} else '""'
        return "NOT " + " OR ".join(excluded)  # only exclusions: handled by the caller
    parts = list(required)
    if optional:
        parts.append("(" + " OR ".join(optional) + ")")
    expression = " AND ".join(parts)
    if excluded:
        expression = f"({expression}) NOT ({' OR '.join(excluded)})"
    return expression


class IndexStore:
    """An index's documents, text index and vectors; see the module docstring."""

    def __init__(self, path: Path, schema: IndexSchema | None = None) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")
        self.connection.executescript(
            """
            CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS docs (
                id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, body TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS vectors (
                key TEXT NOT NULL, field TEXT NOT NULL, data BLOB NOT NULL,
                PRIMARY KEY (key, field));
            """
        )
        if schema is not None:
            self._write_schema(schema)
        else:
            row = self.connection.execute("SELECT value FROM meta WHERE name='index'").fetchone()
            schema = parse_index(json.loads(row[0]))
        self.schema = schema
        self._load()

    # --- schema ---
    def _write_schema(self, schema: IndexSchema) -> None:
        self.connection.execute(
            "INSERT OR REPLACE INTO meta VALUES ('index', ?)", (json.dumps(schema.definition),)
        )

    def _fts_columns(self) -> list[str]:
        return [field.name for field in self.schema.text_fields]

    def _create_fts(self) -> None:
        columns = ", ".join(_quoted(name) for name in self._fts_columns()) or "_none"
        self.connection.execute("DROP TABLE IF EXISTS fts")
        self.connection.execute(f"CREATE VIRTUAL TABLE fts USING fts5({columns})")

    def update_schema(self, schema: IndexSchema) -> None:
        with self.lock:
            check_update(self.schema, schema)
            rebuild = [field.name for field in schema.text_fields] != self._fts_columns()
            self.schema = schema
            self.connection.execute("BEGIN")
            self._write_schema(schema)
            if rebuild:
                self._create_fts()
                for key, rowid in self.rowids.items():
                    self._insert_fts(rowid, self.documents[key])
            self.connection.execute("COMMIT")

    def _load(self) -> None:
        exists = self.connection.execute("SELECT 1 FROM sqlite_master WHERE name='fts'").fetchone()
        if not exists:
            self._create_fts()
        self.documents: dict[str, dict[str, Any]] = {}
        self.rowids: dict[str, int] = {}
        self.keys_by_rowid: dict[int, str] = {}
        for rowid, key, body in self.connection.execute("SELECT id, key, body FROM docs"):
            self.documents[key] = json.loads(body)
            self.rowids[key] = rowid
            self.keys_by_rowid[rowid] = key
        self.vectors: dict[str, dict[str, np.ndarray]] = {
            field.name: {} for field in self.schema.vector_fields
        }
        for key, field, data in self.connection.execute("SELECT key, field, data FROM vectors"):
            if field in self.vectors:
                self.vectors[field][key] = np.frombuffer(data, dtype=np.float32)
        self._matrices: dict[str, tuple[list[str], np.ndarray]] = {}

    # --- writes ---
    def _insert_fts(self, rowid: int, document: dict[str, Any]) -> None:
        columns = self._fts_columns()
        if not columns:
            return
        values = []
        for name in columns:
            value = document.get(name)
            values.append("\n".join(value) if isinstance(value, list) else value)
        names = ", ".join(["rowid", *(_quoted(name) for name in columns)])
        marks = ", ".join("?" * (len(columns) + 1))
        self.connection.execute(f"INSERT INTO fts({names}) VALUES ({marks})", (rowid, *values))

    def _check_values(self, document: dict[str, Any]) -> None:
        for name, value in document.items():
            if name == "@search.action":
                continue
            field = self.schema.field(name)
            if field is None:
                raise SearchRequestError(
                    f"The property '{name}' does not exist on type 'search.documentFields'. "
                    "Make sure to only use property names that are defined by the type."
                )
            check_value(field, value)

    def index(self, actions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Apply ``docs/index`` actions in one transaction; one result per action, as Azure."""
        key_name = self.schema.key.name
        results = []
        with self.lock:
            self.connection.execute("BEGIN")
            try:
                for action in actions:
                    results.append(self._apply(action, key_name))
                self.connection.execute("COMMIT")
            except BaseException:
                self.connection.execute("ROLLBACK")
                self._load()
                raise
            self._matrices.clear()
        return results

    def _apply(self, action: dict[str, Any], key_name: str) -> dict[str, Any]:
        kind = action.get("@search.action", "upload")
        key = action.get(key_name)
        if kind not in ACTIONS:
            raise SearchRequestError(
                f"Invalid '@search.action' value '{kind}' (expected one of "
                f"{', '.join(sorted(ACTIONS))})."
            )
        if not isinstance(key, str) or not DOCUMENT_KEY.match(key):
            return _result(
                str(key),
                400,
                f"Invalid document key: '{key}'. Keys can only contain letters, digits, "
                "underscore (_), dash (-), or equal sign (=).",
            )
        self._check_values(action)
        fields = {name: value for name, value in action.items() if name != "@search.action"}
        if kind == "delete":
            self._delete(key)
            return _result(key, 200)
        existing = self.documents.get(key)
        if kind == "merge" and existing is None:
            return _result(key, 404, "Document not found.")
        if kind == "upload" or existing is None:
            merged = fields
            stored_vectors: dict[str, np.ndarray] = {}
        else:
            merged = {**existing, **fields}
            stored_vectors = {
                name: vectors[key] for name, vectors in self.vectors.items() if key in vectors
            }
        self._store(key, merged, stored_vectors, status_new=existing is None)
        return _result(key, 201 if existing is None else 200)

    def _store(
        self,
        key: str,
        fields: dict[str, Any],
        kept_vectors: dict[str, np.ndarray],
        *,
        status_new: bool,
    ) -> None:
        vector_names = {field.name for field in self.schema.vector_fields}
        body = {name: value for name, value in fields.items() if name not in vector_names}
        new_vectors = {
            name: np.asarray(fields[name], dtype=np.float32)
            for name in vector_names
            if fields.get(name) is not None
        }
        vectors = {**kept_vectors, **new_vectors}
        if not status_new:
            self._delete(key)
        cursor = self.connection.execute(
            "INSERT INTO docs(key, body) VALUES (?, ?)", (key, json.dumps(body))
        )
        rowid = int(cursor.lastrowid or 0)
        self._insert_fts(rowid, body)
        for name, vector in vectors.items():
            self.connection.execute(
                "INSERT INTO vectors VALUES (?, ?, ?)", (key, name, vector.tobytes())
            )
            self.vectors[name][key] = vector
        self.documents[key] = body
        self.rowids[key] = rowid
        self.keys_by_rowid[rowid] = key

    def _delete(self, key: str) -> None:
        rowid = self.rowids.pop(key, None)
        if rowid is None:
            return
        self.connection.execute("DELETE FROM docs WHERE id = ?", (rowid,))
        if self._fts_columns():
            self.connection.execute("DELETE FROM fts WHERE rowid = ?", (rowid,))
        self.connection.execute("DELETE FROM vectors WHERE key = ?", (key,))
        del self.keys_by_rowid[rowid]
        del self.documents[key]
        for vectors in self.vectors.values():
            vectors.pop(key, None)

    # --- reads ---
    def count(self) -> int:
        with self.lock:
            return len(self.documents)

    def get(self, key: str) -> dict[str, Any] | None:
        """The document with its vectors, or None."""
        with self.lock:
            document = self.documents.get(key)
            if document is None:
                return None
            vectors = {
                name: vectors[key].tolist()
                for name, vectors in self.vectors.items()
                if key in vectors
            }
            return {**document, **vectors}

    def text_matches(
        self, search_text: str, mode: str, search_fields: Sequence[str] | None
    ) -> list[tuple[str, float]]:
        """Keys matching ``search_text``, best BM25 score first (score 1.0 for ``*``)."""
        expression = fts_query(search_text, mode)
        with self.lock:
            if expression is None:
                return [(key, 1.0) for key in self.documents]
            if not self._fts_columns():
                return []
            if search_fields:
                for name in search_fields:
                    field = self.schema.field(name)
                    if field is None or not field.is_text:
                        raise SearchRequestError(
                            f"The field '{name}' in the searchFields parameter is not a "
                            "searchable field of the index."
                        )
                columns = " ".join(_quoted(name) for name in search_fields)
                expression = f"{{{columns}}} : ({expression})"
            only_excluded = expression.startswith("NOT ")
            query = expression[4:] if only_excluded else expression
            rows = self.connection.execute(
                "SELECT rowid, bm25(fts) FROM fts WHERE fts MATCH ? ORDER BY bm25(fts)",
                (query,),
            ).fetchall()
            if only_excluded:
                excluded = {self.keys_by_rowid[rowid] for rowid, _ in rows}
                return [(key, 1.0) for key in self.documents if key not in excluded]
            # FTS5's bm25() is lower-is-better; Azure's score is higher-is-better.
            return [(self.keys_by_rowid[rowid], -score) for rowid, score in rows]

    def _matrix(self, field: str) -> tuple[list[str], np.ndarray]:
        if field not in self._matrices:
            vectors = self.vectors[field]
            keys = list(vectors)
            if keys:
                matrix = np.vstack([vectors[key] for key in keys]).astype(np.float32)
                norms = np.linalg.norm(matrix, axis=1, keepdims=True)
                matrix /= np.where(norms == 0, 1, norms)
            else:
                dimensions = self.schema.field(field).dimensions or 0  # type: ignore[union-attr]
                matrix = np.zeros((0, dimensions), dtype=np.float32)
            self._matrices[field] = (keys, matrix)
        return self._matrices[field]

    def nearest(
        self, field: str, vector: Sequence[float], k: int, allowed: Iterable[str] | None
    ) -> list[tuple[str, float]]:
        """The ``k`` nearest documents by cosine (exact), scored as Azure scores cosine:
        ``1 / (1 + (1 - similarity))``; only keys in ``allowed`` when given (pre-filter)."""
        with self.lock:
            keys, matrix = self._matrix(field)
        query = np.asarray(vector, dtype=np.float32)
        norm = float(np.linalg.norm(query))
        if norm == 0 or not keys:
            return []
        similarities = matrix @ (query / norm)
        if allowed is not None:
            permitted = set(allowed)
            mask = np.fromiter((key in permitted for key in keys), dtype=bool, count=len(keys))
            similarities = np.where(mask, similarities, -np.inf)
            k = min(k, int(mask.sum()))
        k = min(k, len(keys))
        if k <= 0:
            return []
        top = np.argpartition(-similarities, k - 1)[:k]
        top = top[np.argsort(-similarities[top], kind="stable")]
        return [(keys[i], 1.0 / (2.0 - float(similarities[i]))) for i in top]

    def close(self) -> None:
        with self.lock:
            self.connection.close()


def _result(key: str, status: int, error: str | None = None) -> dict[str, Any]:
    return {"key": key, "status": status < 300, "errorMessage": error, "statusCode": status}
