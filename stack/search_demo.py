"""``make run``'s search step: index the project's own READMEs, then ask the reasoner two
questions through the bridge and print its answers with their citations.

Indexing goes through the workers (``ai.index_texts``: chunked, embedded under the embedding
quota, uploaded to the Search emulator or APP_SEARCH_ENDPOINT); the questions go the way any
producer's messages go, on the reasoner route's input queue, and the answers come back on its
output queue.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bridge.bus import OutgoingMessage, connect_bus
from settings import Settings
from stack.workload import new_run_id, route_for
from worker import create_celery

REPO_ROOT = Path(__file__).resolve().parents[1]
# The corpus: every README of the project (top level and each package's).
CORPUS_GLOB = ("README.md", "*/README.md")
DEMO_INDEX = "conduit-docs"
QUESTIONS = [
    "When does the bridge complete a Service Bus message?",
    "How does the quota limiter share tokens between workers?",
]
# Embedding a few hundred chunks under the quota, on a cold and busy 2-core machine.
INDEX_TIMEOUT_SECS = 300.0
ANSWER_TIMEOUT_SECS = 180.0
RECEIVE_WAIT_SECS = 1.0


def say(line: str = "") -> None:
    print(line, flush=True)


def corpus() -> list[dict[str, str]]:
    """The READMEs as documents: id and title from the path, the text as it is."""
    paths = sorted({path for pattern in CORPUS_GLOB for path in REPO_ROOT.glob(pattern)})
    return [
        {
            "id": str(path.relative_to(REPO_ROOT).with_suffix("")).replace("/", "_"),
            "title": str(path.relative_to(REPO_ROOT)),
            "text": path.read_text(encoding="utf-8"),
            "source": str(path.relative_to(REPO_ROOT)),
        }
        for path in paths
    ]


def _index(settings: Settings) -> None:
    docs = corpus()
    app = create_celery(settings)
    try:
        started = time.monotonic()
        summary = app.send_task("ai.index_texts", args=[DEMO_INDEX, docs]).get(
            timeout=INDEX_TIMEOUT_SECS
        )
    finally:
        app.close()
    say(
        f"Indexed {summary['indexed']} chunks of {summary['documents']} READMEs into search "
        f"index {DEMO_INDEX!r} in {time.monotonic() - started:.0f} s"
        + (f" ({len(summary['failed'])} failed)" if summary["failed"] else "")
    )
    if summary["failed"]:
        raise RuntimeError(f"{len(summary['failed'])} chunks were not indexed")


def _ask(settings: Settings) -> None:
    route = route_for(settings, "reasoner")
    run_id = new_run_id()
    asked = {f"{run_id}-question-{n}": question for n, question in enumerate(QUESTIONS)}
    bus = connect_bus(settings)
    receiver = bus.receiver(route.out_queue)
    try:
        bus.send(
            route.in_queue,
            [
                OutgoingMessage(
                    body=json.dumps({"id": key, "question": question, "index": DEMO_INDEX}),
                    message_id=key,
                )
                for key, question in asked.items()
            ],
        )
        say(f"Asked the reasoner {len(asked)} questions on {route.in_queue}:")
        if settings.embedded_openai:
            say(
                "  (the emulator stands in for the model: the answers' words are its filler; "
                "the citations are real keys the hybrid search returned)"
            )
        deadline = time.monotonic() + ANSWER_TIMEOUT_SECS
        while asked and time.monotonic() < deadline:
            batch = receiver.receive(max_count=8, max_wait_s=RECEIVE_WAIT_SECS)
            for message in batch:
                answer = json.loads(message.body)
                question = asked.pop(str(answer.get("id")), None)
                if question is not None:
                    _print_answer(question, answer)
            receiver.complete(batch)
    finally:
        receiver.close()
        bus.close()
    if asked:
        raise RuntimeError(f"no answer to {len(asked)} question(s) in {ANSWER_TIMEOUT_SECS:g} s")


def _print_answer(question: str, answer: dict) -> None:
    say(f"  Q: {question}")
    if answer.get("message") != "SUCCESS":
        say(f"  failed: {answer.get('error')}")
        return
    say(f"  A: {answer['answer']}")
    citations = ", ".join(answer["citations"]) or "none"
    say(f"     citations {citations}; confidence {answer['confidence']:.2f}")


def run_search_demo(settings: Settings, redis_url: str) -> bool:
    """Index the READMEs and ask the questions; False (after saying why) if either failed."""
    settings = settings.model_copy(update={"redis_url": redis_url})
    if settings.search_endpoint is None and not settings.embedded_openai:
        # make run starts the emulators only in place of Azure OpenAI.
        say("Search demo skipped: set APP_SEARCH_ENDPOINT to run it against Azure AI Search.")
        return True
    try:
        _index(settings)
        _ask(settings)
    except Exception as error:  # noqa: BLE001 - the demo reports any failure in one line
        say(f"Search demo failed: {type(error).__name__}: {error}")
        return False
    return True
