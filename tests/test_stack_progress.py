"""What `make run` says while inputs wait: read from the real result backend, limiter and
queues (a real Redis), and the endpoints; and formatted in one line."""

from __future__ import annotations

import pytest

from quota import QuotaLimiter
from settings import Route, get_settings, load_settings
from settings.redis_server import free_port
from stack.progress import InputState, WaitWatcher, full_pools, waiting_line
from stack.workload import SampleMessage
from tasks.errors import TransientError
from tasks.processors import task_id_for
from worker import create_celery

ROUTE = Route(in_queue="whisper_iq", processor="transcribe", out_queue="whisper_oq")


def sample(name: str) -> SampleMessage:
    return SampleMessage(ROUTE, f"run-{name}", {"id": f"run-{name}"}, f"audio {name}")


def test_the_line_names_inputs_states_reasons_full_pools_backlog_and_a_down_upstream() -> None:
    line = waiting_line(
        31.6,
        [
            InputState("audio long", "RETRY", "QuotaExceeded: whisper full"),
            InputState("audio short", "STARTED"),
            *(InputState(f"form {n}", "not started") for n in range(4)),
        ],
        ["whisper/whisper full (15 of 15 requests; room again in 12 s)"],
        {"transcribe": 2, "feedback": 0},
        ["http://127.0.0.1:9 (APP_OPENAI_API_BASE) unreachable: ConnectError: refused"],
    )
    assert line.startswith("  … 32 s without a result; waiting for 6: ")
    assert "audio long (RETRY: QuotaExceeded: whisper full)" in line
    assert "audio short (STARTED)" in line
    assert "2 more" in line  # four named, the rest counted
    assert "quota: whisper/whisper full (15 of 15 requests; room again in 12 s)" in line
    assert "queued: transcribe 2" in line and "feedback" not in line
    assert "upstream DOWN: http://127.0.0.1:9 (APP_OPENAI_API_BASE)" in line


@pytest.fixture
def watcher(redis_client, redis_url):
    settings = load_settings(
        redis_url=redis_url,
        openai_api_base=f"http://127.0.0.1:{free_port()}",  # nothing listens
        whisper_rpm_quota=2,
    )
    celery = create_celery(settings)
    limiter = QuotaLimiter(redis_client, settings)
    yield WaitWatcher(settings, celery, redis_client, limiter, every_s=0.0)
    celery.close()


def test_a_quiet_wait_names_retries_full_pools_backlog_and_the_unreachable_endpoint(
    watcher, redis_client
) -> None:
    waiting, started = sample("long"), sample("short")
    backend = watcher.celery.backend
    backend.store_result(
        task_id_for(ROUTE.in_queue, waiting.message_id),
        TransientError("upstream answered 503"),
        "RETRY",
    )
    backend.store_result(task_id_for(ROUTE.in_queue, started.message_id), None, "STARTED")
    whisper = watcher.settings.whisper_engine
    # Fill the Whisper pool's window (the limiter scales the per-minute limit to its window).
    admitted = 0
    while watcher.limiter.acquire("whisper", whisper, 0, "test").allowed:
        admitted += 1
        assert admitted < 100
    redis_client.rpush("transcribe", "a queued task", "another")

    line = watcher.line_if_quiet([waiting, started, sample("never-sent")])

    assert line is not None
    assert "audio long (RETRY: TransientError: upstream answered 503)" in line
    assert "audio short (STARTED)" in line
    assert "audio never-sent (not started)" in line
    assert f"whisper/{whisper} full ({admitted} of 2 requests; room again in" in line
    assert "queued: transcribe 2" in line
    assert f"upstream DOWN: {watcher.settings.openai_api_base} (APP_OPENAI_API_BASE)" in line


def test_nothing_is_said_while_results_come_or_nothing_waits(watcher) -> None:
    assert watcher.line_if_quiet([]) is None
    watcher.every_s = 3600.0
    watcher.result_arrived()
    assert watcher.line_if_quiet([sample("long")]) is None


def test_full_pools_skips_pools_with_room(redis_client, redis_url) -> None:
    limiter = QuotaLimiter(redis_client, get_settings())
    assert full_pools(limiter.all_status()) == []
