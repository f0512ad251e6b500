"""``feedback``: a customer's free-text feedback → sentiment, categories, summary, language.

The older feedback-form service's message in and out: ``{id, taskId?, language, text}`` becomes
``{id, taskId, message: "SUCCESS", sentiment, categories, summary, language}``; a failure is
the shared ``{id, taskId, message: "failed", error}`` (tasks/processors/base.py). The analysis
is a structured completion held to :class:`FeedbackAnalysis`'s schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from tasks.completion import structured_prompt
from tasks.processors.base import processor_task

SYSTEM_PROMPT = (
    "You analyse customer feedback written in {language}. Classify its overall sentiment, list "
    "the topics it is about as short lower-case categories (for example 'delivery', 'price', "
    "'support'), summarise it in one or two sentences in English, and name the language it is "
    "written in as an ISO 639-1 code."
)
USER_PROMPT = "Feedback:\n{text}"
# Enough for a two-sentence summary and a handful of categories.
ANALYSIS_MAX_TOKENS = 400


class FeedbackInput(BaseModel):
    id: str | int
    taskId: str | None = None  # the older message's field name
    language: str = Field(min_length=2)
    text: str = Field(min_length=1)
    app_id: str | None = None


class FeedbackAnalysis(BaseModel):
    sentiment: Literal["positive", "neutral", "negative", "mixed"]
    categories: list[str]
    summary: str
    language: str


@processor_task("feedback", FeedbackInput)
def feedback(message: FeedbackInput) -> dict[str, Any]:
    analysis = structured_prompt(
        SYSTEM_PROMPT,
        USER_PROMPT,
        FeedbackAnalysis,
        variables={"language": message.language, "text": message.text},
        temperature=0.0,
        max_tokens=ANALYSIS_MAX_TOKENS,
        app_id=message.app_id,
    )
    return {
        "id": message.id,
        "taskId": message.taskId,
        "message": "SUCCESS",
        **analysis.model_dump(),
    }
