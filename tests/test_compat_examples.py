"""Every usage example of the older library's documentation
(../shared/reference/older-ai-microservices.md), copied as written with only its imports changed
(``common`` / ``common_new`` → ``compat``), run against the emulator and a real Redis.

Where a snippet cannot run as printed, the change is the least that makes it run and is said at
the line: placeholder file paths become real recordings, a snippet's ``...`` gets a body, an
Entra ID account URL becomes Azurite's connection string (Azurite has no Entra ID), and the
never-returning ``await handler.listen()`` is in tests/test_compat_service_bus.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient
from pydantic import BaseModel

from compat.threads import shutdown_pool
from emulators.speech import synthesize, wav_bytes
from tasks.connections import quota_limiter

CHAT, EMBEDDING, WHISPER = "gpt-4o", "text-embedding-3-large", "whisper"
LIMITS = {
    CHAT: {"tpm": 100_000, "rpm": 6000},
    EMBEDDING: {"tpm": 1_000_000, "rpm": 6000},
    WHISPER: {"tpm": 0, "rpm": 600},
}
PHRASE = "what is the weather today"  # one the emulator's recognizer knows
WAIT_SECS = 120


@pytest.fixture(scope="module")
def emulator(module_emulator_starter):
    return module_emulator_starter(limits=LIMITS)


@pytest.fixture(autouse=True)
def conduit(emulator, redis_url, tiktoken_cache, monkeypatch) -> Iterator[object]:
    """This process talks to the emulator, with the quota of a fresh Redis."""
    emulator.reset()
    for name, value in emulator.client_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("APP_WHISPER_RPM_QUOTA", "600")
    yield emulator
    shutdown_pool()


def charged(emulator, deployment: str) -> dict[str, int]:
    return emulator.stats()["deployments"].get(deployment, {})


def app_usage(pool: str, deployment: str, app: str):
    return quota_limiter().status(pool, deployment).apps.get(app)


def recording(path: Path) -> str:
    path.write_bytes(wav_bytes(synthesize(PHRASE)))
    return str(path)


def test_azure_openai_service_example(conduit):
    async def example() -> str:
        from compat.azure_openai_service import AzureOpenAIService

        # Initialize service
        ai_service = AzureOpenAIService(app_id="my_app")

        # Send a prompt
        response = await ai_service.send_prompt(
            system_prompt="You are a helpful assistant.",
            user_prompt="Tell me about {topic}.",
            variables={"topic": "AI"},
        )
        return response

    response = asyncio.run(example())

    assert isinstance(response, str) and response
    assert charged(conduit, CHAT)["admitted"] == 1
    assert app_usage("completion", CHAT, "my_app").requests == 1


def test_azure_embedding_service_example(conduit):
    async def example():
        from compat.azure_embedding_service import AzureEmbeddingService

        # Initialize embedding service
        embedding_service = AzureEmbeddingService(app_id="my_app")

        # Create single embedding
        embedding = await embedding_service.create_embedding("Hello world")

        # Create multiple embeddings
        texts = ["Text 1", "Text 2", "Text 3"]
        embeddings = await embedding_service.create_embedding(texts)

        # Process large batch with chunking
        large_texts = ["Text {}".format(i) for i in range(1000)]  # noqa: UP032 - as written
        embeddings = await embedding_service.create_embedding_batch(large_texts, batch_size=100)
        return embedding, embeddings, embedding_service

    embedding, embeddings, service = asyncio.run(example())

    assert len(embedding) == 1 and len(embedding[0]) > 100
    assert len(embeddings) == 1000
    assert charged(conduit, EMBEDDING)["admitted"] == 1 + 1 + 10  # batches of 100
    assert app_usage("embedding", EMBEDDING, "my_app").requests == 12
    assert service._estimate_tokens(["Hello world"]) == 2
    assert service._get_encoding_for_model(EMBEDDING).name == "cl100k_base"


def test_token_client_example(conduit):
    async def example():
        from compat.token_client import TokenClient

        # Initialize client
        client = TokenClient(app_id="my_app", base_url="http://token-counter:8000")

        # Completion service operations
        allowed, request_id, error = await client.lock_tokens(1000)
        await client.report_usage(request_id, prompt_tokens=500, completion_tokens=200)
        status = await client.get_status()

        # Embedding service operations
        allowed, request_id, error = await client.lock_embedding_tokens(5000)
        await client.report_embedding_usage(request_id, prompt_tokens=5000)
        embedding_status = await client.get_embedding_status()
        await client.aclose()  # not in the example: the test's event loop ends here
        return allowed, error, status, embedding_status

    allowed, error, status, embedding_status = asyncio.run(example())

    assert (allowed, error) == (True, None)
    # The azure charge model (the default) keeps the charged estimate, as Azure does.
    assert status["used_tokens"] == 1000 and status["locked_tokens"] == 0
    assert embedding_status["used_tokens"] == 5000


def test_retry_helpers_example(conduit, monkeypatch):
    # A short window, so the refusal below clears in seconds rather than a minute.
    monkeypatch.setenv("QUOTA_WINDOW_SECONDS", "2")
    monkeypatch.setenv("APP_TPM_QUOTA", "1000")
    from compat.token_client import TokenClient

    calls: list[bool] = []

    async def example():
        from compat.retry_helpers import with_token_limit_retry, with_token_limit_retry_decorator

        token_client = TokenClient(app_id="my_app")
        await token_client.lock_tokens(900)  # most of the window, so the next lock is refused

        async def my_async_function():
            allowed, request_id, error = await token_client.lock_tokens(500)
            calls.append(allowed)
            if not allowed:
                raise RuntimeError(error)  # the older counter's wording, which retries match
            return request_id

        args, kwargs = (), {}

        # Use as a wrapper
        result = await with_token_limit_retry(my_async_function, token_client, *args, **kwargs)

        # Or as a decorator
        @with_token_limit_retry_decorator(token_client)
        async def my_function():
            # Function that might hit rate limits
            return await my_async_function()

        second = await my_function()
        await token_client.aclose()
        return result, second

    result, second = asyncio.run(example())

    assert result and second
    assert calls[0] is False and calls.count(True) == 2  # refused, waited, then allowed


def test_logger_example(caplog):
    from compat.logger import get_app_name, get_logger

    error_message = "the upstream said no"
    with caplog.at_level(logging.INFO):
        logger = get_logger("my_component")
        logger.info("Operation successful")
        logger.error("Error occurred: %s", error_message)

    assert [r.getMessage() for r in caplog.records if r.name == "my_component"] == [
        "Operation successful",
        "Error occurred: the upstream said no",
    ]
    assert get_app_name() == "conduit"
    assert get_logger("quiet", "WARNING").level == logging.WARNING


def test_whisper_example(conduit, tmp_path, monkeypatch):
    # Where this service's recordings live (a local path must be inside it on tasks/' rule).
    monkeypatch.setenv("AUDIO_LOCAL_ROOT", str(tmp_path))
    chunk_dir = tmp_path / "chunks"
    chunk_dir.mkdir()

    async def example(audio: str, chunk1: str, chunk2: str):
        from compat.azure_openai_service import AzureOpenAIServiceWhisper

        # Initialize Whisper service
        whisper_service = AzureOpenAIServiceWhisper(app_id="app_whisper")

        # Single file transcription
        result = await whisper_service.transcribe_audio(
            audio_file_path=audio,  # was "/path/to/audio.wav"
            language="en",
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )

        # Transcription with retry logic
        retried = await whisper_service.transcribe_audio_with_retry(
            audio_file_path=audio,  # was "/path/to/audio.wav"
            max_retries=3,
            retry_delay=2.0,
        )

        # Concurrent chunk processing
        chunk_paths = [chunk1, chunk2]  # was ["/path/to/chunk1.wav", "/path/to/chunk2.wav"]
        results = await whisper_service.transcribe_audio_chunks(chunk_paths)

        # Check rate limiting stats
        stats = whisper_service.get_rate_limit_stats()
        print(f"Current usage: {stats['utilization_percentage']:.1f}%")

        # Dynamically adjust rate limit
        await whisper_service.set_rate_limit(100)  # Increase to 100 RPM
        return result, retried, results, stats, whisper_service.get_rate_limit_stats()

    result, retried, results, stats, after = asyncio.run(
        example(
            recording(tmp_path / "audio.wav"),
            recording(chunk_dir / "chunk1.wav"),
            recording(chunk_dir / "chunk2.wav"),
        )
    )

    assert result["text"] == "What is the weather today."
    assert result["segments"] and result["words"]
    assert retried == {"text": "What is the weather today."}
    assert results == [{"text": "What is the weather today."}] * 2
    assert stats["used_requests"] == 4 and stats["requests_per_minute"] == 600
    assert stats["utilization_percentage"] == pytest.approx(100 * 4 / 600)
    assert after["requests_per_minute"] == 100
    assert app_usage("whisper", WHISPER, "app_whisper").requests == 4


class Feedback(BaseModel):
    sentiment: str
    topics: list[str]


def test_completion_and_embedding_integration_pattern(conduit):
    async def example():
        from compat.azure_embedding_service import AzureEmbeddingService
        from compat.azure_openai_service import AzureOpenAIService

        # Initialize both services with same app_id for unified tracking
        openai_service = AzureOpenAIService(app_id="my_app")
        embedding_service = AzureEmbeddingService(app_id="my_app")

        # Use appropriate service for each operation
        response = await openai_service.structured_prompt(  # the example's "..." filled in
            system_prompt="Classify the feedback.",
            user_prompt="Feedback: {text}",
            response_model=Feedback,
            variables={"text": "The app is fast but the login is confusing."},
        )
        embeddings = await embedding_service.create_embedding(["fast app", "confusing login"])
        return response, embeddings

    response, embeddings = asyncio.run(example())

    assert isinstance(response, Feedback)
    assert len(embeddings) == 2
    assert app_usage("completion", CHAT, "my_app").requests == 1
    assert app_usage("embedding", EMBEDDING, "my_app").requests == 1


def test_blob_storage_uploader_example(azurite, tmp_path):
    source = tmp_path / "file.txt"
    source.write_text("hello from the older API\n")

    async def example():
        from compat.blob_storage import AsyncBlobStorageUploader

        # Initialize uploader
        uploader = AsyncBlobStorageUploader(
            connection_string=azurite,  # was account_url="https://myaccount.blob.core.windows.net"
            container_name="my-container",
            max_retries=16,
            retry_delay=2.0,
        )
        await uploader.initialize()

        # Upload a file
        await uploader.upload_file(str(source), blob_name="uploaded-file.txt")  # was /path/to/
        return await uploader.shutdown()  # not in the example: waits for the queued upload

    assert asyncio.run(example()) == []
    with BlobServiceClient.from_connection_string(azurite) as service:
        blob = service.get_blob_client("my-container", "uploaded-file.txt")
        assert blob.download_blob().readall() == source.read_bytes()


def test_log_monitor_service_example(azurite, tmp_path):
    logs = tmp_path / "app-logs"
    logs.mkdir()
    (logs / "my-application.log").write_text("active\n")
    rotated = logs / "my-application.2026-11-27.log"
    rotated.write_text("yesterday\n")

    async def example():
        from compat.log_monitor import LogMonitorService

        # Initialize monitor
        monitor = LogMonitorService(
            logs_dir=str(logs),  # was "/app/logs"
            connection_string=azurite,  # was account_name="mystorageaccount"
            container_name="logs",
            app_name="my-application",
        )

        # Start monitoring
        await monitor.initialize()
        await monitor.shutdown()  # not in the example: the final scan ships the rotated file

    asyncio.run(example())
    with BlobServiceClient.from_connection_string(azurite) as service:
        names = [b.name for b in service.get_container_client("logs").list_blobs()]
    assert len(names) == 1 and names[0].startswith("my-application/")
    assert names[0].endswith("/my-application.2026-11-27.log")


def test_azure_search_service_example(conduit):
    from tasks import search

    # The older service worked on an index that existed; one document already has a vector.
    search.ensure_index("my-documents", vector_dimensions=3)
    search.upload_documents(
        "my-documents", [{"id": "0", "content": "vectors", "content_vector": [0.1, 0.2, 0.25]}]
    )

    async def example():
        from compat.azure_search_service import AzureSearchService

        # Initialize search service
        search_service = AzureSearchService(index_name="my-documents", app_id="my_app")

        # Upload documents
        documents = [
            {"id": "1", "title": "AI Overview", "content": "AI is transforming..."},
            {"id": "2", "title": "ML Basics", "content": "Machine learning..."},
        ]
        await search_service.upload_documents(documents)

        # Text search
        results = await search_service.search_documents("machine learning", top=5)

        # Vector search (requires vector field in documents)
        vector_results = await search_service.vector_search(
            vector=[0.1, 0.2, 0.3],  # was [0.1, 0.2, 0.3, ...]: Your query vector
            vector_field="content_vector",
            top=10,
        )

        # Get specific document
        document = await search_service.get_document("1")

        # Clean up
        search_service.close()
        return results, vector_results, document

    results, vector_results, document = asyncio.run(example())

    assert [r["id"] for r in results] == ["2"]
    assert [r["id"] for r in vector_results] == ["0"]
    assert document == {"id": "1", "title": "AI Overview", "content": "AI is transforming..."}


def test_search_with_the_embedding_service_example(conduit):
    from tasks import search
    from tasks.embedding import create_embedding

    texts = {"a": "artificial intelligence applications", "b": "a recipe for bread"}
    vectors = create_embedding(list(texts.values()))
    search.ensure_index("vectors", vector_dimensions=len(vectors[0]))
    search.upload_documents(
        "vectors",
        [
            {"id": key, "content": text, "content_vector": vector}
            for (key, text), vector in zip(texts.items(), vectors, strict=True)
        ],
    )

    async def example():
        from compat.azure_embedding_service import AzureEmbeddingService
        from compat.azure_search_service import AzureSearchService

        # Initialize both services
        search_service = AzureSearchService(index_name="vectors", app_id="my_app")
        embedding_service = AzureEmbeddingService(app_id="my_app")

        # Generate embedding for query
        query_text = "artificial intelligence applications"
        query_embedding = await embedding_service.create_embedding(query_text)

        # Perform vector search
        results = await search_service.vector_search(
            vector=query_embedding[0], vector_field="content_vector", top=5
        )
        return results

    results = asyncio.run(example())

    assert results[0]["id"] == "a"  # the same text's vector is nearest


# --- beyond the examples: the retries the older services relied on -------------------------------


def test_send_prompt_retries_transient_failures_then_raises(conduit):
    from compat.azure_openai_service import AzureOpenAIService
    from tasks.errors import TransientError

    conduit.configure(error_rate=1.0, error_status=503)
    try:
        with pytest.raises(TransientError, match="503"):
            asyncio.run(
                AzureOpenAIService(app_id="my_app").send_prompt("Hi.", "Hi.", max_retries=1)
            )
    finally:
        conduit.configure(error_rate=0.0)

    assert charged(conduit, CHAT)["faults"] == 2  # the first attempt and one retry


def test_send_prompt_waits_out_a_quota_refusal(conduit, monkeypatch):
    # A short window, so the refusal clears in seconds rather than a minute.
    monkeypatch.setenv("QUOTA_WINDOW_SECONDS", "2")
    monkeypatch.setenv("APP_TPM_QUOTA", "2000")
    from compat.azure_openai_service import AzureOpenAIService

    async def example() -> str:
        from compat.token_client import TokenClient

        async with TokenClient(app_id="someone_else") as other:
            allowed, _, _ = await other.lock_tokens(1800)  # the window is nearly full
            assert allowed
        return await AzureOpenAIService(app_id="my_app").send_prompt(
            "You are terse.", "Say hi.", max_tokens=200
        )

    assert asyncio.run(example())
    assert charged(conduit, CHAT)["admitted"] == 1  # refused by our quota, never by Azure
    assert app_usage("completion", CHAT, "my_app").requests == 1


@pytest.mark.slow
def test_chunks_go_up_at_once_but_never_faster_than_the_whisper_quota(
    start_emulator, redis_url, tiktoken_cache, monkeypatch, tmp_path
):
    """An emulator (like Azure) allowing 12 Whisper requests a 6 s window, 2 per 1 s sub-window;
    the quota set the same. Six chunks at once would be three 429s without the quota."""
    tight = start_emulator(limits={WHISPER: {"tpm": 0, "rpm": 12}}, EMULATOR_WINDOW_SECONDS="6")
    for name, value in tight.client_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("APP_WHISPER_RPM_QUOTA", "12")
    monkeypatch.setenv("QUOTA_WINDOW_SECONDS", "6")
    monkeypatch.setenv("AUDIO_LOCAL_ROOT", str(tmp_path))
    chunks = [recording(tmp_path / f"chunk{i}.wav") for i in range(6)]
    from compat.azure_openai_service import AzureOpenAIServiceWhisper

    try:
        results = asyncio.run(
            AzureOpenAIServiceWhisper("app_whisper").transcribe_audio_chunks(chunks)
        )
    finally:
        shutdown_pool()

    assert results == [{"text": "What is the weather today."}] * 6
    assert charged(tight, WHISPER) == {
        "requests": 6,
        "admitted": 6,
        "throttled": 0,  # our quota made them wait; Azure never had to refuse one
        "tokens_charged": 0,
        "faults": 0,
    }
