"""The OpenAI SDK clients for completion, embedding and Whisper: built from settings, once each.

Three endpoints because production often puts them on different Azure resources (as the older
services did): ``APP_OPENAI_*`` for chat, ``APP_EMBEDDING_*`` for embeddings, ``APP_WHISPER_*`` for
audio; an unset embedding or Whisper endpoint falls back to the completion one.

Authentication, in order: an API key when one is configured; the emulator's dev key when no
endpoint is configured (the embedded emulator stands in); otherwise Entra ID through
``DefaultAzureCredential`` (managed identity in Azure, ``az login`` on a laptop).

``max_retries=0`` everywhere: Conduit retries (tasks/upstream.py and the Celery tasks) so that
every attempt goes through the shared quota and none is spent behind its back. Sending needs an
Azure OpenAI endpoint (or the emulator), so the example is shown, not run::

    client = completion_client()  # the same object on every call in this process
    client.chat.completions.create(model=settings.openai_engine, messages=[...])

A spill-over deployment (APP_OPENAI_DEPLOYMENTS ...) may live on its own endpoint with its own
key: :func:`deployment_client` is the client for the deployment the quota chose.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from settings import EMULATOR_DEV_KEY, Deployment, Settings, get_settings

if TYPE_CHECKING:  # the SDK is imported on first use: the bridge imports tasks/ and stays light
    from openai import OpenAI

ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"
# OpenAI-compatible servers (vLLM, Ollama, llama.cpp) ignore the key, but the SDK insists on one.
UNUSED_API_KEY = "unused"


@dataclass(frozen=True)
class Endpoint:
    """Where one kind of request goes and how it authenticates (hashable: the client cache key)."""

    base_url: str
    api_version: str
    kind: Literal["azure", "openai"]
    api_key: str | None  # None: Entra ID
    timeout_s: float


def _endpoint(settings: Settings, base: str | None, version: str, key: str | None) -> Endpoint:
    if settings.embedded_openai and base is None:
        emulator_key = settings.emulator_api_key
        return Endpoint(
            settings.emulator_url,
            version,
            "azure",
            emulator_key.get_secret_value() if emulator_key else EMULATOR_DEV_KEY,
            settings.openai_timeout_s,
        )
    completion_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    base_url = base or settings.openai_api_base
    if base_url is None:  # not embedded, so APP_OPENAI_API_BASE is set: settings say so
        raise ValueError("APP_OPENAI_API_BASE is not set")
    return Endpoint(
        base_url,
        version,
        settings.openai_client_kind,
        key or completion_key,
        settings.openai_timeout_s,
    )


def completion_endpoint(settings: Settings) -> Endpoint:
    return _endpoint(settings, settings.openai_api_base, settings.openai_api_version, None)


def embedding_endpoint(settings: Settings) -> Endpoint:
    key = settings.embedding_api_key
    return _endpoint(
        settings,
        settings.embedding_api_base,
        settings.embedding_api_version,
        key.get_secret_value() if key else None,
    )


def whisper_endpoint(settings: Settings) -> Endpoint:
    return _endpoint(settings, settings.whisper_api_base, settings.openai_api_version, None)


POOL_ENDPOINTS: dict[str, Callable[[Settings], Endpoint]] = {
    "completion": completion_endpoint,
    "embedding": embedding_endpoint,
    "whisper": whisper_endpoint,
}


def deployment_endpoint(settings: Settings, pool: str, deployment: Deployment) -> Endpoint:
    """The pool's endpoint, with the deployment's own address and key where it has them."""
    endpoint = POOL_ENDPOINTS[pool](settings)
    if deployment.endpoint is not None:
        endpoint = replace(endpoint, base_url=deployment.endpoint)
    if deployment.api_key is not None:
        endpoint = replace(endpoint, api_key=deployment.api_key.get_secret_value())
    return endpoint


# Called with each HTTP request as it leaves any SDK client built here: tasks/upstream.py adds
# the quota's send-time stamp. Through httpx's event hooks on the SDK's public DefaultHttpxClient,
# which keeps the SDK's own connection defaults.
REQUEST_HOOKS: list[Callable[[Any], None]] = []


def _request_leaving(request: Any) -> None:
    for hook in REQUEST_HOOKS:
        hook(request)


def event_hooks() -> dict[str, list[Callable[[Any], None]]]:
    """httpx event hooks for an SDK client's HTTP client: what every client here is built with
    (a test giving the SDK its own HTTP client passes these too)."""
    return {"request": [_request_leaving]}


@lru_cache(maxsize=16)
def client_for(endpoint: Endpoint) -> OpenAI:
    """The one client of this process for ``endpoint`` (the SDK client is thread-safe)."""
    from openai import AzureOpenAI, DefaultHttpxClient, OpenAI

    http_client = DefaultHttpxClient(event_hooks=event_hooks())
    if endpoint.kind == "openai":
        return OpenAI(
            base_url=endpoint.base_url,
            api_key=endpoint.api_key or UNUSED_API_KEY,
            timeout=endpoint.timeout_s,
            max_retries=0,
            http_client=http_client,
        )
    if endpoint.api_key is not None:
        return AzureOpenAI(
            azure_endpoint=endpoint.base_url,
            api_version=endpoint.api_version,
            api_key=endpoint.api_key,
            timeout=endpoint.timeout_s,
            max_retries=0,
            http_client=http_client,
        )
    from azure.identity import DefaultAzureCredential, get_bearer_token_provider

    token_provider = get_bearer_token_provider(DefaultAzureCredential(), ENTRA_SCOPE)
    return AzureOpenAI(
        azure_endpoint=endpoint.base_url,
        api_version=endpoint.api_version,
        azure_ad_token_provider=token_provider,
        timeout=endpoint.timeout_s,
        max_retries=0,
        http_client=http_client,
    )


def completion_client() -> OpenAI:
    return client_for(completion_endpoint(get_settings()))


def embedding_client() -> OpenAI:
    return client_for(embedding_endpoint(get_settings()))


def whisper_client() -> OpenAI:
    return client_for(whisper_endpoint(get_settings()))


def deployment_client(pool: str, deployment: Deployment) -> OpenAI:
    """This process's client for one deployment of ``pool`` (a spill-over target)."""
    return client_for(deployment_endpoint(get_settings(), pool, deployment))
