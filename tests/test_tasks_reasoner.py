"""The reasoner end to end: messages on the local bus's ``reasoner_iq``, a real ``python -m bridge``
and ``celery worker``, the emulator for embeddings, search and completion; answers out on
``reasoner_oq``."""

from __future__ import annotations

import json
import socket

import pytest

from bridge.bus import OutgoingMessage
from bridge.local_bus import LocalBus
from bridge.metrics import HEARTBEATS_KEY
from settings import get_settings
from tasks.processors.reasoner import answer_model
from tasks.search_index import ensure_chunk_index, index_chunk_batch, plan_chunks
from tests.support.processes import ManagedProcess, python_args

pytestmark = pytest.mark.slow

DIMENSIONS = "64"
RESULT_TIMEOUT_SECS = 120
KNOWLEDGE = [
    {
        "id": "bridge",
        "title": "The bridge",
        "text": "The bridge completes a Service Bus message only after publishing its task to "
        "Celery succeeded, so a crash never loses a message.",
    },
    {
        "id": "quota",
        "title": "The quota",
        "text": "The quota limiter is one Lua script in Redis that shares tokens per minute "
        "between every worker.",
    },
    {
        "id": "outbox",
        "title": "The outbox",
        "text": "Results wait in a Redis Stream outbox until the bridge has sent them.",
    },
]


@pytest.fixture
def reasoner_env(start_emulator, conduit_env, monkeypatch):
    emulator = start_emulator()
    env = {
        **emulator.client_env(),
        "APP_SEARCH_VECTOR_DIMENSIONS": DIMENSIONS,
        "BRIDGE_MAX_IDLE_SECONDS": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return emulator, {**conduit_env, **env}


def start_bridge(env, tmp_path, redis_client) -> ManagedProcess:
    process = ManagedProcess(
        python_args("-m", "bridge"), env, tmp_path / "bridge.log", name="bridge"
    )
    process.ready = lambda: (
        redis_client.zscore(HEARTBEATS_KEY, f"{socket.gethostname()}:{process.pid}") is not None
    )
    return process.start()


def test_questions_through_the_bridge_are_answered_from_the_index(
    reasoner_env, start_worker, redis_client, tmp_path
):
    emulator, env = reasoner_env
    chunks = plan_chunks(KNOWLEDGE)
    assert index_chunk_batch("knowledge", chunks)["indexed"] == len(chunks)
    ensure_chunk_index("empty-knowledge", int(DIMENSIONS))
    emulator.reset()

    start_worker(**env)
    bridge = start_bridge(env, tmp_path, redis_client)
    try:
        questions = [
            {"id": "q1", "question": "When does the bridge complete a message?",
             "index": "knowledge", "top": 2},
            {"id": "q2", "question": "When does the bridge complete a message?",
             "index": "empty-knowledge"},
            {"id": "q3", "index": "knowledge"},
        ]  # fmt: skip
        bus = LocalBus(redis_client)
        bus.send(
            "reasoner_iq",
            [OutgoingMessage(body=json.dumps(q), message_id=f"m-{q['id']}") for q in questions],
        )
        bridge.wait_until(
            lambda: len(bus.peek("reasoner_oq", 10)) >= 2, RESULT_TIMEOUT_SECS, "two answers"
        )
        [refused] = bus.dead_letters("reasoner_iq", 10)
        answers = {
            answer["id"]: answer
            for answer in (json.loads(m.body) for m in bus.peek("reasoner_oq", 10))
        }
    finally:
        bridge.stop()

    grounded = answers["q1"]
    assert grounded["message"] == "SUCCESS"
    assert isinstance(grounded["answer"], str) and grounded["answer"]
    assert set(grounded["citations"]) <= {chunk["id"] for chunk in chunks}
    assert 0.0 <= grounded["confidence"] <= 1.0

    unanswerable = answers["q2"]
    assert unanswerable["message"] == "SUCCESS"
    assert "found no passages" in unanswerable["answer"]
    assert (unanswerable["citations"], unanswerable["confidence"]) == ([], 0.0)

    # A message without a question never reaches a worker: the bridge dead-letters it.
    assert refused.message_id == "m-q3" and "question" in refused.dead_letter_description

    deployments = emulator.stats()["deployments"]
    # One completion (q1 only: q2 had no passages) and one question embedding each for q1, q2.
    assert deployments["gpt-4o"]["admitted"] == 1
    assert deployments["text-embedding-3-large"]["admitted"] == 2


def test_the_answer_schema_allows_only_retrieved_keys_as_citations():
    model = answer_model(["bridge-0000", "quota-0000"])
    assert model.model_validate(
        {"answer": "a", "citations": ["quota-0000"], "confidence": 0.5}
    ).citations == ["quota-0000"]
    schema = model.model_json_schema()
    assert schema["properties"]["citations"]["items"]["enum"] == ["bridge-0000", "quota-0000"]
    with pytest.raises(ValueError, match="citations"):
        model.model_validate({"answer": "a", "citations": ["invented-0001"], "confidence": 1})
