"""The Azure AI Search emulator: the REST subset Conduit's calls use, served by
``python -m emulators`` at ``/search`` beside the OpenAI routes (see ../README.md).

    schema.py   index definitions checked as Azure checks them; the Search error bodies
    odata.py    $filter and $orderby: parsed, checked against the index, compiled (no I/O)
    store.py    one index on disk: SQLite (documents, FTS5 for BM25) + numpy vectors in memory
    query.py    a docs/search request: text, vector, hybrid (RRF), filter, order, page, select
    routes.py   the Flask blueprint: URLs, auth, status codes
"""
