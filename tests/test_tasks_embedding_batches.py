"""A batch of embeddings never pays for the same texts twice (issue 10.17): a quota refusal half
way resumes at the first batch not yet answered, checked against the emulator's count of
repeated request bodies (``repeated_requests`` in /_emulator/stats)."""

from __future__ import annotations

import uuid

import pytest

from settings import get_settings
from tasks.connections import quota_limiter
from tasks.embedding import _checked_tokens, create_embedding_batch
from tasks.embedding_checkpoint import EmbeddingCheckpoint, pack_vectors, unpack_vectors
from tasks.errors import QuotaExhausted

EMBEDDING = "text-embedding-3-large"
LIMITS = {EMBEDDING: {"tpm": 1_000_000, "rpm": 60_000}}
# A short window, the same for the emulator and Conduit, so a refused batch gets room soon.
WINDOW_SECS = "3"
RESULT_TIMEOUT_SECS = 120
TEXTS = [f"catalogue item {n}: a plain sentence about item number {n}" for n in range(6)]
BATCH_SIZE = 2  # three requests of two texts


@pytest.fixture(scope="module")
def emulator(module_emulator_starter):
    return module_emulator_starter(limits=LIMITS, EMULATOR_WINDOW_SECONDS=WINDOW_SECS)


@pytest.fixture
def env(emulator, conduit_env, monkeypatch):
    emulator.reset()
    values = {
        **emulator.client_env(),
        "QUOTA_WINDOW_SECONDS": WINDOW_SECS,
        "APP_EMBEDDING_ENGINE": EMBEDDING,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def stats(emulator) -> dict[str, int]:
    return emulator.stats()["deployments"].get(EMBEDDING, {})


def batch_charges() -> list[int]:
    _, charges = _checked_tokens(TEXTS, EMBEDDING, truncate=False)
    return [sum(charges[start : start + BATCH_SIZE]) for start in range(0, len(TEXTS), BATCH_SIZE)]


def test_vectors_pack_exactly():
    vectors = [[0.1, -2.5e-7, 3.0], [1 / 3, 0.0, -1.0]]
    assert unpack_vectors(pack_vectors(vectors)) == vectors
    assert unpack_vectors(pack_vectors([])) == []


def test_the_emulator_counts_a_body_admitted_twice(env, emulator):
    create_embedding_batch(TEXTS[:2], batch_size=BATCH_SIZE)
    create_embedding_batch(TEXTS[:2], batch_size=BATCH_SIZE)  # what the old retry did
    assert stats(emulator)["admitted"] == 2 and stats(emulator)["repeated_requests"] == 1


def test_a_refusal_mid_batch_resumes_without_resending_answered_batches(env, emulator):
    # Room for the first request only: the second is refused by our own limiter.
    first, second, _ = batch_charges()
    quota_limiter().set_limits("embedding", EMBEDDING, tpm=first + second - 1)
    checkpoint = EmbeddingCheckpoint(f"test-{uuid.uuid4()}")
    with pytest.raises(QuotaExhausted):
        create_embedding_batch(TEXTS, batch_size=BATCH_SIZE, checkpoint=checkpoint)
    assert stats(emulator)["admitted"] == 1

    quota_limiter().set_limits("embedding", EMBEDDING, tpm=1_000_000)
    resumed = create_embedding_batch(TEXTS, batch_size=BATCH_SIZE, checkpoint=checkpoint)
    assert stats(emulator)["admitted"] == 3 and stats(emulator)["repeated_requests"] == 0

    emulator.reset()
    assert create_embedding_batch(TEXTS, batch_size=BATCH_SIZE) == resumed
    checkpoint.drop()


@pytest.mark.slow
def test_the_batch_task_waits_for_quota_between_batches_and_sends_each_once(
    env, emulator, celery_app, start_worker, redis_client
):
    # One request's worth a window: the task is refused after each batch and comes back.
    quota_limiter().set_limits("embedding", EMBEDDING, tpm=max(batch_charges()))
    start_worker(concurrency=2, **env)
    task_id = f"test-batch-{uuid.uuid4()}"
    result = celery_app.send_task(
        "ai.create_embedding_batch",
        args=[TEXTS],
        kwargs={"batch_size": BATCH_SIZE},
        task_id=task_id,
    )
    vectors = result.get(timeout=RESULT_TIMEOUT_SECS)
    assert len(vectors) == len(TEXTS)
    seen = stats(emulator)
    assert seen["admitted"] == 3 and seen["repeated_requests"] == 0 and seen["throttled"] == 0
    # The working state is gone once the result is stored.
    assert not redis_client.exists(EmbeddingCheckpoint(task_id).key)
    assert get_settings().quota_window_s == int(WINDOW_SECS)
