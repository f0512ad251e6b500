"""The AI work as Celery tasks: thin wrappers around the plain functions of completion.py,
embedding.py and transcription.py, which hold the logic and can be called without Celery.

Every task here is a :class:`tasks.task_base.ConduitTask`, so it:

* is **idempotent by task id**: a task id that already succeeded returns its stored result and
  calls nothing upstream (send the same work with the same ``task_id`` as often as you like);
* **retries** transient failures without holding its worker slot (tasks/retrying.py): a quota
  refusal after the limiter's ``retry_after_s`` plus jitter, a 429/5xx/timeout with backoff,
  each retry logged with its reason;
* **fails fast** on a permanent error (bad input, 400, content filter): the task's state is
  FAILURE and its message says what to fix.

With a worker running (``make run``)::

    from worker import app    # or any Celery app on the same broker
    app.send_task("ai.send_prompt", args=["You are terse.", "Name a colour."]).get()

A long recording's chunks are transcribed by a group and merged by a chord callback, so no task
ever waits for other tasks inside a worker slot. A batch of embeddings keeps each request's
vectors as it is answered (tasks/embedding_checkpoint.py), so a quota refusal half-way resumes
at the first batch not yet sent instead of paying for the finished ones again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from celery import Task, chord, current_task, group, shared_task
from celery.canvas import Signature

from settings import get_settings
from tasks import completion, embedding, transcription
from tasks.audio_sources import local_audio_path
from tasks.embedding_checkpoint import EmbeddingCheckpoint
from tasks.errors import PermanentError, TransientError
from tasks.task_base import ConduitTask, StoredResults

RESULTS = StoredResults()


def ai_task(
    name: str,
    *,
    failure_result: Callable[..., Any] | None = None,
    after_stored: Callable[[str], None] | None = None,
) -> Callable[[Callable[..., Any]], Task]:
    """Make ``function`` a Celery task named ``name`` with the policy above.

    With ``failure_result(error, *args, **kwargs)``, a permanent error or spent retries become
    that result instead of a failed task (for a group's members, whose callback must still
    run). ``after_stored(task_id)`` runs once the result is stored (to drop working state)."""

    def decorate(function: Callable[..., Any]) -> Task:
        def run(self: ConduitTask, *args: Any, **kwargs: Any) -> Any:
            done, result = self.previous_outcome(RESULTS)
            if done:
                return result
            try:
                result = function(*args, **kwargs)
            except (TransientError, PermanentError) as error:
                if isinstance(error, TransientError):
                    self.retry_transient(error)
                if failure_result is None:
                    raise
                result = failure_result(error, *args, **kwargs)
            if isinstance(result, Signature):
                # The work fans out; the workflow's last task answers for this task id.
                raise self.replace(result)
            RESULTS.put(self.request.id, result)
            if after_stored is not None:
                after_stored(self.request.id)
            return result

        run.__doc__ = function.__doc__
        task: Task = shared_task(name=name, base=ConduitTask, bind=True)(run)
        return task

    return decorate


def _embedding_batch(*args: Any, **kwargs: Any) -> list[embedding.Vector]:
    """``create_embedding_batch`` with this task's batches kept as they are answered."""
    checkpoint = EmbeddingCheckpoint(current_task.request.id)
    return embedding.create_embedding_batch(*args, checkpoint=checkpoint, **kwargs)


def _drop_embedding_batches(task_id: str) -> None:
    EmbeddingCheckpoint(task_id).drop()


chat_completion_task = ai_task("ai.chat_completion")(completion.chat_completion)
send_prompt_task = ai_task("ai.send_prompt")(completion.send_prompt)
create_embedding_task = ai_task("ai.create_embedding")(embedding.create_embedding)
create_embedding_batch_task = ai_task(
    "ai.create_embedding_batch", after_stored=_drop_embedding_batches
)(_embedding_batch)


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
    response_format: transcription.ResponseFormat = "json",
    timestamp_granularities: Sequence[transcription.Granularity] = (),
    *,
    app_id: str | None = None,
) -> Any:
    """The transcript of a recording that fits one upload, or, for a longer one, the workflow
    that will produce it (validated first either way, so bad audio is never uploaded).

    ``path`` is read only inside AUDIO_LOCAL_ROOT: the rule the ``transcribe`` processor's
    ``audio_path`` follows, since a task's arguments come from whoever can send one."""
    local = local_audio_path(path)
    chunks = transcription.prepare_transcription(local, response_format, timestamp_granularities)
    if chunks is None:
        return transcription.transcribe_whole(
            local, language, response_format, timestamp_granularities, app_id=app_id
        )
    return chunked_transcription(
        chunks, language, response_format, timestamp_granularities, app_id=app_id
    )


transcribe_audio_task = ai_task("ai.transcribe_audio")(transcription_work)


def transcribe_audio(
    path: str | Path,
    language: str | None = None,
    response_format: transcription.ResponseFormat = "json",
    timestamp_granularities: Sequence[transcription.Granularity] = (),
    *,
    app_id: str | None = None,
) -> transcription.Transcript | str:
    """Transcribe the recording at ``path`` (inside AUDIO_LOCAL_ROOT, validated first) in
    ``response_format``.

    A long recording's chunks are transcribed by the Celery workers at once, and this waits for
    them: call it from a client process. A task uses :data:`transcribe_audio_task`, which hands
    the chunks to the workers without holding its own slot.
    """
    outcome = transcription_work(
        str(path), language, response_format, timestamp_granularities, app_id=app_id
    )
    if isinstance(outcome, Signature):
        answer: transcription.Transcript | str = outcome.apply_async().get(
            timeout=get_settings().task_time_limit_s
        )
        return answer
    return outcome
