"""The AI tasks through real ``celery worker`` processes against the emulator over HTTP."""

from __future__ import annotations

import json

import pytest

from tasks.connections import quota_limiter
from tasks.outbox import stream_key
from tasks.processors import get_processor, task_id_for
from tests.support.emulator import LOADED_MARGIN_ENV

pytestmark = pytest.mark.slow

CHAT = "gpt-4o"
# A short window so a tiny quota refills within the test; the same for the emulator and Conduit.
# The emulator counts a request from its arrival, after Conduit stamped it: quota/'s upstream
# margin covers the way between (LOADED_MARGIN_ENV: the slack a loaded test box needs).
WINDOW_SECS = "11"
LIMITS = {
    CHAT: {"tpm": 100_000, "rpm": 60_000},
    "tiny": {"tpm": 2000, "rpm": 60_000},
    "shared": {"tpm": 1200, "rpm": 60_000},
    "text-embedding-3-large": {"tpm": 1_000_000, "rpm": 60_000},
}
RESULT_TIMEOUT_SECS = 150


@pytest.fixture(scope="module")
def emulator(module_emulator_starter):
    return module_emulator_starter(limits=LIMITS, EMULATOR_WINDOW_SECONDS=WINDOW_SECS)


@pytest.fixture
def worker_env(emulator, conduit_env, monkeypatch):
    """Environment of this test process and of the workers it starts: same quota, same window."""
    emulator.reset()
    env = {
        **emulator.client_env(),
        **LOADED_MARGIN_ENV,
        "QUOTA_WINDOW_SECONDS": WINDOW_SECS,
        "APP_TPM_QUOTA": "100000",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def deployment_stats(emulator, deployment):
    return emulator.stats()["deployments"].get(deployment, {})


def send_prompts(celery_app, count, deployment):
    return [
        celery_app.send_task(
            "ai.send_prompt",
            args=["You answer in one line.", "Describe item {n} of the catalogue.", {"n": n}],
            kwargs={"model": deployment, "max_tokens": 40 + 10 * (n % 4)},
        )
        for n in range(count)
    ]


def test_a_tiny_quota_finishes_every_task_without_one_upstream_429(
    emulator, worker_env, celery_app, start_worker
):
    quota_limiter().set_limits("completion", "tiny", tpm=2000)
    start_worker(concurrency=8, **worker_env)
    results = send_prompts(celery_app, 50, "tiny")
    answers = [result.get(timeout=RESULT_TIMEOUT_SECS) for result in results]
    assert len(answers) == 50 and all(isinstance(answer, str) for answer in answers)
    stats = deployment_stats(emulator, "tiny")
    assert stats["admitted"] == 50 and stats["throttled"] == 0


def test_a_shared_deployment_converges_without_a_429_storm(
    emulator, worker_env, celery_app, start_worker
):
    # Conduit is configured for 100,000 tokens a window; the deployment gives it 1,200.
    start_worker(concurrency=8, **worker_env)
    results = send_prompts(celery_app, 30, "shared")
    assert all(isinstance(result.get(timeout=RESULT_TIMEOUT_SECS), str) for result in results)
    stats = deployment_stats(emulator, "shared")
    # Only requests already in flight before the first answer's headers can be refused.
    assert stats["admitted"] == 30 and stats["throttled"] <= 8


def test_a_succeeded_task_id_answers_from_its_stored_result(
    emulator, worker_env, celery_app, start_worker
):
    start_worker(concurrency=2, **worker_env)
    messages = [{"role": "user", "content": "hello"}]
    first = celery_app.send_task(
        "ai.chat_completion", args=[messages], kwargs={"max_tokens": 20}, task_id="fixed-id"
    ).get(timeout=RESULT_TIMEOUT_SECS)
    again = celery_app.send_task(
        "ai.chat_completion", args=[messages], kwargs={"max_tokens": 20}, task_id="fixed-id"
    ).get(timeout=RESULT_TIMEOUT_SECS)
    assert first == again and deployment_stats(emulator, CHAT)["admitted"] == 1
    vectors = celery_app.send_task(
        "ai.create_embedding_batch", args=[["a", "b", "c"]], kwargs={"batch_size": 2}
    ).get(timeout=RESULT_TIMEOUT_SECS)
    assert len(vectors) == 3


def test_a_permanent_error_fails_fast_with_a_clear_message(
    emulator, worker_env, celery_app, start_worker
):
    start_worker(concurrency=2, **worker_env)
    result = celery_app.send_task("ai.send_prompt", args=["sys", "About {topic}."])
    with pytest.raises(Exception, match="topic") as failure:
        result.get(timeout=RESULT_TIMEOUT_SECS)
    assert type(failure.value).__name__ == "InvalidInput" and result.state == "FAILURE"
    assert deployment_stats(emulator, CHAT) == {}


def test_feedback_processor_answers_in_the_older_shape(
    emulator, worker_env, celery_app, start_worker, redis_client
):
    start_worker(concurrency=2, **worker_env)
    processor = get_processor("feedback")
    body = {
        "id": "f-1",
        "taskId": "t-9",
        "language": "en",
        "text": "Delivery was late and the box was damaged {again}.",
    }
    outcome = celery_app.send_task(
        processor.task_name,
        args=[body],
        kwargs={"out_queue": "form_oq", "message_id": "m-1"},
        task_id=task_id_for("form_iq", "m-1"),
        queue=processor.queue,
    ).get(timeout=RESULT_TIMEOUT_SECS)
    assert outcome["id"] == "f-1" and outcome["taskId"] == "t-9"
    assert outcome["message"] == "SUCCESS", outcome
    assert outcome["sentiment"] in {"positive", "neutral", "negative", "mixed"}
    assert isinstance(outcome["categories"], list) and outcome["summary"]
    ((_, fields),) = redis_client.xrange(stream_key("form_oq"))
    assert json.loads(fields["body"]) == outcome
