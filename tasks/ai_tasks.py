"""The AI work as Celery tasks: thin wrappers around the plain functions of completion.py,
embedding.py and transcription.py, which hold the logic and can be called without Celery.

Every task here:

* is **idempotent by task id**: a task id that already succeeded returns its stored result and
  calls nothing upstream (send the same work with the same ``task_id`` as often as you like);
* **retries** transient failures without holding its worker slot (tasks/retrying.py): a quota
  refusal after the limiter's ``retry_after_s`` plus jitter, a 429/5xx/timeout with backoff;
* **fails fast** on a permanent error (bad input, 400, content filter): the task's state is
  FAILURE and its message says what to fix.

    >>> from worker import app    # or any Celery app on the same broker
    >>> app.send_task("ai.send_prompt", args=["You are terse.", "Name a colour."]).get()

A long recording's chunks are transcribed by a group and merged by a chord callback, so no task
ever waits for other tasks inside a worker slot.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from celery import Task, chord, group, shared_task
from celery.canvas import Signature

from settings import get_settings
from tasks import completion, embedding, transcription
from tasks.connections import redis_client
from tasks.errors import PermanentError, TransientError
from tasks.retrying import schedule_retry

RESULT_KEY_PREFIX = "conduit:task-result"


def _stored_result(task_id: str) -> tuple[bool, Any]:
    stored = redis_client().get(f"{RESULT_KEY_PREFIX}:{task_id}")
    return (False, None) if stored is None else (True, json.loads(stored))


def _store_result(task_id: str, result: Any) -> None:
    # Kept as long as Celery keeps results; Celery's own copy cannot serve here, because a
    # started task overwrites its SUCCESS state with STARTED before our code runs.
    redis_client().set(
        f"{RESULT_KEY_PREFIX}:{task_id}", json.dumps(result), ex=get_settings().result_expires_s
    )


def ai_task(name: str, *, failure_result: Callable[..., Any] | None = None):
    """Make ``function`` a Celery task named ``name`` with the policy above. With
    ``failure_result(error, *args, **kwargs)``, a permanent error or spent retries become that
    result instead of a failed task (for a group's members, whose callback must still run)."""

    def decorate(function: Callable[..., Any]) -> Task:
        def run(self: Task, *args: Any, **kwargs: Any) -> Any:
            done, result = _stored_result(self.request.id)
            if done:
                return result
            try:
                result = function(*args, **kwargs)
            except (TransientError, PermanentError) as error:
                if isinstance(error, TransientError):
                    schedule_retry(self, error)
                if failure_result is None:
                    raise
                result = failure_result(error, *args, **kwargs)
            if isinstance(result, Signature):
                # The work fans out; the workflow's last task answers for this task id.
                raise self.replace(result)
            _store_result(self.request.id, result)
            return result

        run.__doc__ = function.__doc__
        return shared_task(name=name, bind=True, acks_late=True, reject_on_worker_lost=True)(run)

    return decorate


chat_completion_task = ai_task("ai.chat_completion")(completion.chat_completion)
send_prompt_task = ai_task("ai.send_prompt")(completion.send_prompt)
create_embedding_task = ai_task("ai.create_embedding")(embedding.create_embedding)
create_embedding_batch_task = ai_task("ai.create_embedding_batch")(embedding.create_embedding_batch)


def _chunk_failure(
    error: Exception, key: str, offset_s: float, *_: Any, **__: Any
) -> dict[str, Any]:
    return {"key": key, "offset_s": offset_s, "error": f"{type(error).__name__}: {error}"}


transcribe_chunk_task = ai_task("ai.transcribe_chunk", failure_result=_chunk_failure)(
    transcription.transcribe_chunk
)
merge_chunk_results_task = ai_task("ai.merge_chunk_results")(transcription.merge_chunk_results)


def chunk_group(
    chunks: Sequence[transcription.ChunkRef],
    language: str | None,
    timestamp_granularities: Sequence[str],
    *,
    app_id: str | None,
) -> group:
    """One task per parked chunk; each returns a result for merge_chunk_results, even failed."""
    return group(
        transcribe_chunk_task.s(
            chunk.key, chunk.offset_s, language, list(timestamp_granularities), app_id=app_id
        )
        for chunk in chunks
    )


def chunked_transcription(
    chunks: Sequence[transcription.ChunkRef],
    language: str | None,
    response_format: str,
    timestamp_granularities: Sequence[str],
    *,
    app_id: str | None,
) -> Signature:
    """The chunks transcribed at once, then merged into ``response_format``."""
    return chord(
        chunk_group(chunks, language, timestamp_granularities, app_id=app_id),
        merge_chunk_results_task.s(response_format),
    )


def transcription_work(
    path: str,
    language: str | None = None,
    response_format: str = "json",
    timestamp_granularities: Sequence[str] = (),
    *,
    app_id: str | None = None,
) -> Any:
    """The transcript of a recording that fits one upload, or, for a longer one, the workflow
    that will produce it (validated first either way, so bad audio is never uploaded)."""
    chunks = transcription.prepare_transcription(path, response_format, timestamp_granularities)
    if chunks is None:
        return transcription.transcribe_whole(
            path, language, response_format, timestamp_granularities, app_id=app_id
        )
    return chunked_transcription(
        chunks, language, response_format, timestamp_granularities, app_id=app_id
    )


transcribe_audio_task = ai_task("ai.transcribe_audio")(transcription_work)
