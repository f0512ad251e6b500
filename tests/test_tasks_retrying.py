"""The one retry policy of every task (tasks/retrying.py, tasks/task_base.py): quota waits and
upstream failures are counted apart, each kind gives up at its own cap, every retry is logged
with its reason."""

from __future__ import annotations

import itertools
import logging
import uuid

import httpx2
import openai
import pytest

from settings import get_settings
from tasks.ai_tasks import ai_task
from tasks.errors import QuotaExhausted, TransientError
from tasks.retrying import (
    MAX_QUOTA_RETRIES,
    MAX_TRANSIENT_RETRIES,
    describe_cause,
    plan_retry,
)
from tasks.task_base import TRANSIENT_COUNT_PREFIX


def test_quota_waits_do_not_spend_the_transient_cap():
    upstream = TransientError("completion deployment 'x' answered 503")
    # Eleven quota waits (a calm chat task's share) and no upstream failure yet.
    plan = plan_retry(upstream, total_retries=11, transient_retries=0)
    assert plan is not None and plan.kind == "transient" and plan.number == 1
    assert plan_retry(upstream, total_retries=40, transient_retries=MAX_TRANSIENT_RETRIES) is None


def test_quota_waits_have_their_own_cap():
    refusal = QuotaExhausted("no room", retry_after_s=3.0)
    plan = plan_retry(refusal, total_retries=10, transient_retries=4)
    assert plan is not None and plan.kind == "quota" and plan.number == 7
    assert 3.0 <= plan.countdown_s <= 4.0  # the limiter's hint plus jitter, no backoff
    spent = MAX_QUOTA_RETRIES + 2
    assert plan_retry(refusal, total_retries=spent, transient_retries=2) is None


def test_transient_backoff_grows_with_the_transient_count_not_the_total():
    error = TransientError("timeout")
    first = plan_retry(error, total_retries=30, transient_retries=0)
    assert first is not None and first.countdown_s < 4.0  # 2 s base + jitter, not 2**30 capped


def test_the_retry_reason_names_the_upstream_status_or_the_unreachable_url():
    request = httpx2.Request("POST", "http://127.0.0.1:9/openai/deployments/x/chat?api-version=1")
    refused = openai.InternalServerError(
        "boom", response=httpx2.Response(503, request=request), body=None
    )
    try:
        raise TransientError("answered 503") from refused
    except TransientError as error:
        assert describe_cause(error) == "InternalServerError status=503"
    try:
        raise TransientError("cannot reach") from openai.APIConnectionError(request=request)
    except TransientError as error:
        reason = describe_cause(error)
    assert reason == "APIConnectionError url=http://127.0.0.1:9/openai/deployments/x/chat"


def _eager_task(behaviour):
    """A real ConduitTask around ``behaviour`` (raising what it is told), run eagerly: Celery
    runs each retry at once in this process, so every give-up path is reached in milliseconds."""
    return ai_task(f"test.retrying.{uuid.uuid4().hex}")(behaviour)


def test_an_upstream_failure_after_many_quota_waits_still_gets_every_transient_retry(
    redis_url, celery_app, caplog
):
    calls = itertools.count(1)
    quota_waits = 11
    transient_failures = []

    def flaky() -> str:
        call = next(calls)
        if call <= quota_waits:
            raise QuotaExhausted("no room in the completion pool", retry_after_s=0.5)
        transient_failures.append(call)
        raise TransientError("completion deployment 'gpt' answered 503")

    task = _eager_task(flaky)
    with caplog.at_level(logging.WARNING, logger="tasks.task_base"):
        result = task.apply(task_id=str(uuid.uuid4()))
    assert result.failed() and isinstance(result.result, TransientError)
    # The first failure plus MAX_TRANSIENT_RETRIES retries: the quota waits did not count.
    assert len(transient_failures) == MAX_TRANSIENT_RETRIES + 1
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert sum(line.startswith("quota retry") for line in retries) == quota_waits
    assert any("retry_after=0.5 s" in line for line in retries)
    assert sum(line.startswith("transient retry") for line in retries) == MAX_TRANSIENT_RETRIES
    assert any(
        "giving up after 6 upstream failure(s) and 11 quota wait(s)" in r.getMessage()
        for r in caplog.records
    )


def test_a_task_that_recovers_before_the_cap_succeeds_and_stores_its_result(
    redis_client, celery_app
):
    calls = itertools.count(1)

    def recovers() -> str:
        if next(calls) <= MAX_TRANSIENT_RETRIES:
            raise TransientError("timeout")
        return "answer"

    task = _eager_task(recovers)
    task_id = str(uuid.uuid4())
    assert task.apply(task_id=task_id).get() == "answer"
    assert not redis_client.exists(f"{TRANSIENT_COUNT_PREFIX}:{task_id}")  # its count is gone
    # Sent again with the same id: the stored answer, the function is not called again.
    assert task.apply(task_id=task_id).get() == "answer"
    assert next(calls) == MAX_TRANSIENT_RETRIES + 2


def _retry_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tasks.task_base"]


def test_an_unreachable_upstream_is_retried_with_its_url_in_the_log(
    redis_url, tiktoken_cache, celery_app, monkeypatch, caplog
):
    from settings.redis_server import free_port
    from tasks.ai_tasks import send_prompt_task

    port = free_port()  # nothing listens here
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tiktoken_cache))
    monkeypatch.setenv("EMULATOR_PORT", str(port))
    get_settings.cache_clear()  # the celery_app fixture read them before
    with caplog.at_level(logging.WARNING, logger="tasks.task_base"):
        result = send_prompt_task.apply(args=["Be terse.", "Hi."], task_id=str(uuid.uuid4()))
    assert result.failed() and isinstance(result.result, TransientError)
    lines = _retry_lines(caplog)
    assert sum(line.startswith("transient retry") for line in lines) == MAX_TRANSIENT_RETRIES
    assert all(f"APIConnectionError url=http://127.0.0.1:{port}/" in line for line in lines)


@pytest.mark.slow
@pytest.mark.usefixtures("redis_url", "celery_app")
def test_an_upstream_5xx_is_retried_with_its_status_in_the_log(
    tiktoken_cache, start_emulator, monkeypatch, caplog
):
    from tasks.ai_tasks import send_prompt_task

    emulator = start_emulator(limits={"gpt-4o": {"tpm": 100_000, "rpm": 6000}})
    emulator.configure(error_rate=1.0, error_status=503)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tiktoken_cache))
    for name, value in emulator.client_env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()  # the celery_app fixture read them before
    with caplog.at_level(logging.WARNING, logger="tasks.task_base"):
        result = send_prompt_task.apply(args=["Be terse.", "Hi."], task_id=str(uuid.uuid4()))
    assert result.failed()
    lines = _retry_lines(caplog)
    assert sum("InternalServerError status=503" in line for line in lines) == (
        MAX_TRANSIENT_RETRIES + 1  # six retries and the give-up
    )
    assert emulator.stats()["deployments"]["gpt-4o"]["faults"] == MAX_TRANSIENT_RETRIES + 1
