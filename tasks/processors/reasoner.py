"""``reasoner``: a question → an answer grounded in an index's passages, with citations.

The older app_reasoner's route (``reasoner_iq → reasoner → reasoner_oq``). In: ``{id, taskId?,
question, index?, top?, app_id?}``. Out: ``{id, taskId, message: "SUCCESS", answer, citations,
confidence}``, or the shared failure payload.

1. the question is embedded inside the embedding quota and the index is searched hybrid (BM25
   and vectors fused by RRF), so exact terms and paraphrases both find passages;
2. no passage found → an answer that says so, with no citations and confidence 0, and no
   completion is spent on inventing one;
3. otherwise a structured completion inside the completion quota answers from the passages
   alone. The answer's schema lists the retrieved keys as the only values ``citations`` may
   take, so the model cannot cite a passage it was not given.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from tasks.processors.base import processor_task

SYSTEM_PROMPT = (
    "You answer questions using only the passages given. Each passage starts with its key in "
    "square brackets. Cite the keys of the passages your answer relies on. If the passages do "
    "not contain the answer, say that they do not, cite nothing and give a confidence near 0. "
    "Confidence is your probability, from 0 to 1, that the answer is correct and supported."
)
USER_PROMPT = "Passages:\n{passages}\n\nQuestion: {question}"
# Enough for a paragraph of answer and a few citations.
ANSWER_MAX_TOKENS = 600
# Passages longer than this are cut in the prompt: the answer needs their gist, not all of them.
MAX_PASSAGE_CHARS = 2000
DEFAULT_TOP = 5
NO_PASSAGES_ANSWER = (
    "I found no passages in index {index!r} that match this question, so I cannot answer it "
    "from the index."
)


class ReasonerInput(BaseModel):
    id: str | int
    taskId: str | None = None  # the older message's field name
    question: str = Field(min_length=1, max_length=4000)
    index: str | None = None  # unset: APP_SEARCH_INDEX
    top: int = Field(DEFAULT_TOP, ge=1, le=50)
    app_id: str | None = None


def answer_model(keys: list[str]) -> type[BaseModel]:
    """The answer's shape, with ``citations`` limited to ``keys``."""
    from pydantic import create_model

    citation = Literal[tuple(keys)]  # type: ignore[valid-type]
    return create_model(
        "ReasonerAnswer",
        answer=(str, ...),
        citations=(list[citation], ...),  # type: ignore[valid-type]
        confidence=(float, ...),
    )


def _passages(results: list[dict[str, Any]]) -> str:
    lines = []
    for result in results:
        title = result.get("title") or ""
        text = (result.get("content") or "")[:MAX_PASSAGE_CHARS]
        lines.append(f"[{result['id']}] {title}\n{text}".strip())
    return "\n\n".join(lines)


def answer_question(
    question: str, index: str | None = None, top: int = DEFAULT_TOP, *, app_id: str | None = None
) -> dict[str, Any]:
    """``{answer, citations, confidence}`` for ``question`` from ``index``'s passages."""
    from settings import get_settings
    from tasks.completion import structured_prompt
    from tasks.embedding import create_embedding
    from tasks.search import hybrid_search

    settings = get_settings()
    index_name = index or settings.search_index
    vector = create_embedding(
        question, truncate=True, app_id=app_id, dimensions=settings.search_vector_dimensions
    )[0]
    results = hybrid_search(
        index_name, question, vector, top=top, select=["id", "title", "content"]
    )["results"]
    if not results:
        return {
            "answer": NO_PASSAGES_ANSWER.format(index=index_name),
            "citations": [],
            "confidence": 0.0,
        }
    keys = [result["id"] for result in results]
    answer = structured_prompt(
        SYSTEM_PROMPT,
        USER_PROMPT,
        answer_model(keys),
        variables={"passages": _passages(results), "question": question},
        temperature=0.0,
        max_tokens=ANSWER_MAX_TOKENS,
        app_id=app_id,
    )
    fields = answer.model_dump()
    # In retrieval order, once each, whatever order or repeats the model gave.
    cited = set(fields["citations"])
    return {
        "answer": fields["answer"],
        "citations": [key for key in keys if key in cited],
        "confidence": min(1.0, max(0.0, float(fields["confidence"]))),
    }


@processor_task("reasoner", ReasonerInput)
def reasoner(message: ReasonerInput) -> dict[str, Any]:
    answer = answer_question(message.question, message.index, message.top, app_id=message.app_id)
    return {"id": message.id, "taskId": message.taskId, "message": "SUCCESS", **answer}
