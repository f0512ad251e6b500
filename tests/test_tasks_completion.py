"""Completion and embedding against the emulator over real HTTP, inside the real quota/."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from tasks.completion import (
    chat_completion,
    estimate_tokens,
    format_prompt,
    send_prompt,
    structured_prompt,
)
from tasks.connections import quota_limiter
from tasks.embedding import MAX_INPUT_TOKENS, create_embedding, create_embedding_batch
from tasks.errors import InvalidInput, PermanentError, QuotaExhausted, TransientError
from tests.support.quota import retry_after

CHAT = "gpt-4o"
EMBEDDING = "text-embedding-3-large"
# Generous limits: these tests are about answers and accounting, not about waiting.
LIMITS = {
    CHAT: {"tpm": 100_000, "rpm": 6000},
    EMBEDDING: {"tpm": 1_000_000, "rpm": 6000},
    "tight": {"tpm": 300, "rpm": 6000},
    "counted": {"tpm": 100_000, "rpm": 60},
}


@pytest.fixture(scope="module")
def emulator(module_emulator_starter):
    return module_emulator_starter(limits=LIMITS)


@pytest.fixture(autouse=True)
def conduit(emulator, redis_url, tiktoken_cache, monkeypatch):
    """This process talks to the emulator, with the quota of a fresh Redis."""
    emulator.reset()
    for name, value in emulator.client_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("APP_TPM_QUOTA", "100000")
    monkeypatch.setenv("APP_EMBEDDING_TPM_QUOTA", "1000000")
    return emulator


def charged(emulator, deployment):
    return emulator.stats()["deployments"].get(deployment, {})


def test_chat_completion_reports_its_usage_to_the_quota(conduit):
    messages = format_prompt("You are terse.", "Name a {thing}.", {"thing": "colour"})
    answer = chat_completion(
        messages,
        max_tokens=30,
        temperature=0,
        top_p=1,
        frequency_penalty=0,
        presence_penalty=0,
        stop=["\n\n"],
    )
    assert answer["content"] and answer["finish_reason"] in {"stop", "length"}
    # The estimate is exactly what the emulator (like Azure) charged on arrival.
    assert estimate_tokens(messages, CHAT, 30) == charged(conduit, CHAT)["tokens_charged"]
    assert answer["usage"]["prompt_tokens"] == estimate_tokens(messages, CHAT, 0)
    status = quota_limiter().status("completion", CHAT)
    assert status.locked_tokens == 0 and status.used_requests == 1
    assert status.apps["conduit"].tokens == estimate_tokens(messages, CHAT, 30)


def test_send_prompt_returns_text_and_structured_prompt_a_model(conduit):
    assert isinstance(send_prompt("Be brief.", "Say {word}.", {"word": "hi"}, max_tokens=20), str)

    class Verdict(BaseModel):
        sentiment: str
        categories: list[str]

    verdict = structured_prompt(
        "Classify.",
        "The {item} broke.",
        Verdict,
        variables={"item": "box"},
        max_tokens=200,
        app_id="forms",
    )
    assert isinstance(verdict, Verdict)
    # The schema travels as prompt; the estimate counts it, so quota and upstream agree.
    structured_charge = (
        charged(conduit, CHAT)["tokens_charged"]
        - 20
        - estimate_tokens(format_prompt("Be brief.", "Say hi."), CHAT, 0)
    )
    assert (
        abs(quota_limiter().status("completion", CHAT).apps["forms"].tokens - structured_charge)
        <= 3
    )


def test_quota_refusal_comes_before_any_upload(conduit):
    quota_limiter().set_limits("completion", CHAT, tpm=100)
    assert quota_limiter().acquire("completion", CHAT, 60, "another-worker").allowed
    with pytest.raises(QuotaExhausted) as refused:
        chat_completion([{"role": "user", "content": "hi"}], max_tokens=45)
    assert (refused.value.retry_after_s or 0) > 0
    with pytest.raises(PermanentError, match="more than the whole limit"):
        chat_completion([{"role": "user", "content": "hi"}], max_tokens=500)
    assert charged(conduit, CHAT) == {}


def test_upstream_429_is_transient_with_its_hint_and_informs_the_limiter(conduit):
    # Conduit believes it has 100,000 tokens; the deployment has 300, and another client of
    # it has just spent most of them.
    messages = [{"role": "user", "content": "hello"}]
    conduit.azure_client().chat.completions.create(model="tight", messages=messages, max_tokens=200)
    with pytest.raises(TransientError) as throttled:
        chat_completion(messages, model="tight", max_tokens=200)
    assert "429" in str(throttled.value) and (throttled.value.retry_after_s or 0) > 0
    status = quota_limiter().status("completion", "tight")
    # The refused request keeps its charge (the upstream counted it: releasing it would send the
    # next waiting task into its own 429), the deployment cools down for the upstream's
    # retry-after in every process, and what the upstream said it had left was booked.
    assert status.locked_tokens == 0 and status.apps["conduit"].requests == 1
    assert 0 < status.cooldown_s <= retry_after(throttled.value)
    assert status.apps["(external)"].tokens >= 100_000 - 300
    # So the next attempt is refused here, not upstream, until the cool-down ends.
    with pytest.raises(QuotaExhausted, match="cooling down") as refused:
        chat_completion(messages, model="tight", max_tokens=200)
    assert 0 < retry_after(refused.value) <= status.cooldown_s
    assert charged(conduit, "tight")["throttled"] == 1


def test_upstream_remaining_requests_are_booked_per_ten_seconds(conduit):
    # Conduit and the deployment agree on 60 requests a minute, which Azure allows as 10 per 10 s.
    quota_limiter().set_limits("completion", "counted", rpm=60)
    messages = [{"role": "user", "content": "hello"}]
    for _ in range(2):
        chat_completion(messages, model="counted", max_tokens=10)
    status = quota_limiter().status("completion", "counted")
    assert "(external)" not in status.apps and status.available_requests == 8
    # Another client of the deployment sends 5; the next answer says 2 are left, and so do we.
    for _ in range(5):
        conduit.azure_client().chat.completions.create(
            model="counted", messages=messages, max_tokens=10
        )
    chat_completion(messages, model="counted", max_tokens=10)
    status = quota_limiter().status("completion", "counted")
    assert status.apps["(external)"].requests == 5 and status.available_requests == 2


def test_a_bad_request_fails_permanently_and_stays_charged(conduit):
    with pytest.raises(PermanentError, match="400"):
        chat_completion([{"role": "user", "content": "hi"}], max_tokens=10, temperature=5)
    status = quota_limiter().status("completion", CHAT)
    assert status.locked_tokens == 0 and status.used_tokens > 0


def test_embeddings_keep_order_across_batches(conduit):
    texts = [f"text number {n} about {'cats' if n % 2 else 'dogs'}" for n in range(7)]
    one_by_one = [create_embedding(text)[0] for text in texts]
    batched = create_embedding_batch(texts, batch_size=3)
    assert batched == one_by_one
    assert len(create_embedding(texts[:2])) == 2
    assert charged(conduit, EMBEDDING)["admitted"] == 7 + 3 + 1
    assert (
        quota_limiter().status("embedding", EMBEDDING).used_tokens
        >= charged(conduit, EMBEDDING)["tokens_charged"]
    )


def test_over_long_embedding_input_is_refused_or_truncated(conduit):
    long_text = "word " * (MAX_INPUT_TOKENS + 10)
    with pytest.raises(InvalidInput, match=r"texts\[1\] is \d+ tokens"):
        create_embedding_batch(["short", long_text])
    assert charged(conduit, EMBEDDING) == {}
    vectors = create_embedding_batch(["short", long_text], truncate=True)
    assert len(vectors) == 2 and charged(conduit, EMBEDDING)["throttled"] == 0
