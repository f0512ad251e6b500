"""``common.azure_openai_service`` → ``AzureOpenAIService`` and ``AzureOpenAIServiceWhisper``,
the older asyncio classes over tasks/completion.py and tasks/transcription.py.

    ai_service = AzureOpenAIService(app_id="my_app")
    response = await ai_service.send_prompt(
        system_prompt="You are a helpful assistant.",
        user_prompt="Tell me about {topic}.",
        variables={"topic": "AI"},
    )

Every request goes through the shared quota (quota/) exactly as a Celery task's does; the older
``token_counter_url`` / ``token_counter_resource_uri`` arguments are accepted and ignored (there
is no counter service any more). Return shapes are the older ones: ``chat_completion`` a dict with
``content``, ``finish_reason``, ``model``, ``usage``; ``send_prompt`` the answer's text;
``structured_prompt`` an instance of the given pydantic model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from compat.retrying import with_retries
from compat.threads import run_blocking
from settings import get_settings
from tasks import completion, transcription
from tasks.completion import DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE
from tasks.prompts import Message

ResponseModel = TypeVar("ResponseModel", bound=BaseModel)

# The older send_prompt / transcribe_audio_with_retry defaults.
DEFAULT_MAX_RETRIES = 3
DEFAULT_WHISPER_RETRY_DELAY_SECS = 2.0


class AzureOpenAIService:
    """Chat completions for one app (the quota's ``app_id``) and one default deployment."""

    def __init__(
        self,
        model: str | None = None,
        app_id: str | None = None,
        token_counter_url: str | None = None,
        token_counter_resource_uri: str | None = None,
    ) -> None:
        settings = get_settings()
        self.model = model or settings.openai_engine
        self.app_id = app_id or settings.app_name

    async def chat_completion(  # noqa: PLR0917 - the older method's positional order
        self,
        messages: Sequence[Message],
        model: str | None = None,
        temperature: float = DEFAULT_TEMPERATURE,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        top_p: float | None = None,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
        stop: str | list[str] | None = None,
    ) -> dict[str, Any]:
        """One chat completion (no retry, as before): content, finish_reason, model, usage."""
        return await run_blocking(
            completion.chat_completion,
            messages,
            model or self.model,
            temperature,
            max_tokens,
            top_p,
            frequency_penalty,
            presence_penalty,
            stop,
            app_id=self.app_id,
        )

    def format_prompt(
        self,
        system_prompt: str,
        user_prompt: str,
        variables: Mapping[str, Any] | None = None,
        examples: Sequence[Mapping[str, str]] | None = None,
    ) -> list[Message]:
        """The chat messages: system prompt, examples as user/assistant pairs, user prompt."""
        return completion.format_prompt(system_prompt, user_prompt, variables, examples)

    async def send_prompt(  # noqa: PLR0917 - the older method's positional order
        self,
        system_prompt: str,
        user_prompt: str,
        variables: Mapping[str, Any] | None = None,
        examples: Sequence[Mapping[str, str]] | None = None,
        model: str | None = None,
        temperature: float = DEFAULT_TEMPERATURE,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> str:
        """Format, complete, return the text; transient failures and quota refusals retried."""
        return await with_retries(
            lambda: run_blocking(
                completion.send_prompt,
                system_prompt,
                user_prompt,
                variables,
                examples,
                model or self.model,
                temperature,
                max_tokens,
                app_id=self.app_id,
            ),
            max_retries,
        )

    async def structured_prompt(  # noqa: PLR0917 - the older method's positional order
        self,
        system_prompt: str,
        user_prompt: str,
        response_model: type[ResponseModel],
        variables: Mapping[str, Any] | None = None,
        examples: Sequence[Mapping[str, str]] | None = None,
        model: str | None = None,
        temperature: float = DEFAULT_TEMPERATURE,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> ResponseModel:
        """The answer parsed into ``response_model`` (held to its JSON schema), with retries."""
        return await with_retries(
            lambda: run_blocking(
                completion.structured_prompt,
                system_prompt,
                user_prompt,
                response_model,
                variables,
                examples,
                model or self.model,
                temperature,
                max_tokens,
                app_id=self.app_id,
            ),
            max_retries,
        )


class AzureOpenAIServiceWhisper:
    """Whisper transcription under the shared Whisper requests-per-minute quota.

    The older service limited requests per instance; this quota is one for every worker and
    service on the deployment, so ``set_rate_limit`` changes it for all of them.
    """

    def __init__(self, app_id: str | None = None) -> None:
        self.app_id = app_id or get_settings().app_name

    async def transcribe_audio(
        self,
        audio_file_path: str,
        language: str | None = None,
        response_format: transcription.ResponseFormat = "json",
        timestamp_granularities: Sequence[transcription.Granularity] | None = None,
    ) -> Any:
        """The recording's transcript in ``response_format`` (validated first; a recording longer
        than APP_WHISPER_CHUNK_MAX_SECONDS is cut at silences and its chunks sent at once)."""
        return await run_blocking(
            transcription.transcribe_audio,
            audio_file_path,
            language,
            response_format,
            tuple(timestamp_granularities or ()),
            app_id=self.app_id,
        )

    async def transcribe_audio_with_retry(
        self,
        audio_file_path: str,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_delay: float = DEFAULT_WHISPER_RETRY_DELAY_SECS,
        **options: Any,
    ) -> Any:
        """:meth:`transcribe_audio`, retried after transient failures (``retry_delay`` doubling)
        and after quota refusals (as long as quota says)."""
        return await with_retries(
            lambda: self.transcribe_audio(audio_file_path, **options), max_retries, retry_delay
        )

    async def transcribe_audio_chunks(
        self, chunk_paths: Sequence[str], language: str | None = None, **options: Any
    ) -> list[Any]:
        """Each chunk's transcript, in order, transcribed at once (as many as COMPAT_THREADS) and
        never faster than the Whisper quota allows: a refused chunk waits its turn."""
        return list(
            await asyncio.gather(
                *(
                    self.transcribe_audio_with_retry(path, language=language, **options)
                    for path in chunk_paths
                )
            )
        )

    def get_rate_limit_stats(self) -> dict[str, Any]:
        """The Whisper pool across every worker, with ``utilization_percentage``."""
        return transcription.get_rate_limit_stats()

    async def set_rate_limit(self, rpm: int) -> None:
        """Change the Whisper requests-per-minute limit (for every worker and service)."""
        await run_blocking(transcription.set_rate_limit, rpm)
