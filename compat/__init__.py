"""The older common library's modules and classes, delegating to the real code (migration).

``from common.X import Y`` becomes ``from compat.X import Y``: azure_openai_service,
azure_embedding_service, azure_search_service, service_bus, blob_storage, log_monitor,
token_client, retry_helpers, logger. Nothing is re-implemented here: each class runs tasks/,
quota/, bridge/, logship/ or settings/ code, blocking calls in the pool of compat/threads.py.
See docs/migrating.md for what behaves differently, and the native Conduit way.
"""
