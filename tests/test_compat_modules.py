"""compat/ mirrors the older library module for module: each older import has its compat twin,
async where the older one was async, and the twins are the real code's objects (nothing copied)."""

from __future__ import annotations

import importlib
import inspect

import pytest

# older module → the names imported from it in the older documentation
OLDER_MODULES = {
    "azure_openai_service": ["AzureOpenAIService", "AzureOpenAIServiceWhisper"],
    "azure_embedding_service": ["AzureEmbeddingService"],
    "azure_search_service": ["AzureSearchService"],
    "service_bus": ["AsyncServiceBusHandler"],
    "blob_storage": ["AsyncBlobStorageUploader"],
    "log_monitor": ["LogMonitorService"],
    "token_client": ["TokenClient"],
    "retry_helpers": ["with_token_limit_retry", "with_token_limit_retry_decorator"],
    "logger": ["get_logger", "get_app_name"],
}
# The methods the older classes awaited.
ASYNC_METHODS = {
    "AzureOpenAIService": ["chat_completion", "send_prompt", "structured_prompt"],
    "AzureOpenAIServiceWhisper": [
        "transcribe_audio",
        "transcribe_audio_with_retry",
        "transcribe_audio_chunks",
        "set_rate_limit",
    ],
    "AzureEmbeddingService": ["create_embedding", "create_embedding_batch"],
    "AsyncServiceBusHandler": ["listen", "stop", "send_message", "process_message"],
    "AsyncBlobStorageUploader": ["initialize", "upload_file", "shutdown"],
    "LogMonitorService": ["initialize", "shutdown"],
    # TokenClient's older names return the awaitable of quota/'s one async method per action
    # (a table, not coroutine functions); test_compat_examples awaits each of them.
    "AzureSearchService": ["upload_documents", "search_documents", "vector_search"],
}
# Where the real code lives: compat re-exports it rather than copying it.
REAL = {
    "TokenClient": "quota.client",
    "with_token_limit_retry": "quota.retry",
    "AsyncBlobStorageUploader": "logship.aio",
    "LogMonitorService": "logship.aio",
    "AzureSearchService": "tasks.search_service",
}


@pytest.mark.parametrize("module", sorted(OLDER_MODULES))
def test_every_older_module_has_its_compat_twin(module):
    twin = importlib.import_module(f"compat.{module}")
    for name in OLDER_MODULES[module]:
        obj = getattr(twin, name)
        for method in ASYNC_METHODS.get(name, []):
            assert inspect.iscoroutinefunction(getattr(obj, method)), f"{name}.{method}"
        if name in REAL:
            assert obj is getattr(importlib.import_module(REAL[name]), name)


def test_the_whisper_parameter_keeps_its_older_name():
    from compat.azure_openai_service import AzureOpenAIServiceWhisper

    parameters = inspect.signature(AzureOpenAIServiceWhisper.transcribe_audio).parameters
    assert list(parameters)[1:5] == [
        "audio_file_path",
        "language",
        "response_format",
        "timestamp_granularities",
    ]
