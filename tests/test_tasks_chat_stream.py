"""tasks.chat_stream: a streamed chat completion through the real openai SDK, against the
emulator, inside the shared quota."""

from __future__ import annotations

import pytest

from tasks.chat_stream import stream_chat
from tasks.completion import chat_completion
from tasks.connections import quota_limiter
from tasks.errors import QuotaExhausted
from tasks.token_estimates import estimate_tokens

CHAT = "gpt-4o"
MESSAGES = [
    {"role": "system", "content": "You are a phone agent."},
    {"role": "user", "content": "what is the weather today"},
]


@pytest.fixture(scope="module")
def emulator(module_emulator_starter):
    return module_emulator_starter()


@pytest.fixture(autouse=True)
def conduit(emulator, redis_url, tiktoken_cache, monkeypatch):
    emulator.reset()
    for name, value in emulator.client_env().items():
        monkeypatch.setenv(name, value)
    return emulator


def test_the_stream_is_the_answer_in_pieces_and_its_usage_is_reported() -> None:
    pieces = list(stream_chat(MESSAGES, max_tokens=60, app_id="voice"))
    assert len(pieces) > 3
    whole = chat_completion(MESSAGES, max_tokens=60, app_id="other")
    assert "".join(pieces) == whole["content"]
    status = quota_limiter().status("completion", CHAT)
    assert status.locked_tokens == 0 and status.used_requests == 2
    # Charged to the voice app as Azure charges: the estimate at arrival.
    assert status.apps["voice"].tokens == estimate_tokens(MESSAGES, CHAT, 60)
    # In the interactive lane (the chat completion beside it is batch traffic).
    assert status.lanes["interactive"].tokens == estimate_tokens(MESSAGES, CHAT, 60)
    assert status.lanes["batch"].requests == 1


def test_a_stream_stopped_early_settles_its_lock() -> None:
    stream = stream_chat(MESSAGES, max_tokens=60, app_id="voice")
    first = next(stream)
    assert first
    assert quota_limiter().status("completion", CHAT).locked_tokens > 0
    stream.close()
    status = quota_limiter().status("completion", CHAT)
    assert status.locked_tokens == 0 and status.used_requests == 1


def test_no_quota_left_means_no_request_is_sent(conduit, monkeypatch) -> None:
    estimate = estimate_tokens(MESSAGES, CHAT, 60)
    monkeypatch.setenv("APP_TPM_QUOTA", str(estimate + estimate // 2))
    from settings import get_settings

    get_settings.cache_clear()
    assert "".join(stream_chat(MESSAGES, max_tokens=60, app_id="voice"))
    with pytest.raises(QuotaExhausted) as refused:
        next(stream_chat(MESSAGES, max_tokens=60, app_id="voice"))
    assert refused.value.retry_after_s is not None and refused.value.retry_after_s > 0
    assert conduit.stats()["deployments"][CHAT]["requests"] == 1
