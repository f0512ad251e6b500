"""The ``transcribe`` processor reading its audio from Blob Storage: a real Azurite, a real worker,
and the emulator's Whisper behind it."""

from __future__ import annotations

import json
import uuid

import pytest
from azure.storage.blob import BlobServiceClient

from emulators.speech import synthesize, wav_bytes
from tasks.audio_sources import download_blob
from tasks.connections import redis_client
from tasks.errors import InvalidInput
from tests.support.azurite import ACCOUNT_KEY, connection_string
from tests.support.processors import run_message

RESULT_TIMEOUT_SECS = 120
# One of the phrases the emulator's recognizer knows (emulators/phrases.txt).
PHRASE = "what is the weather today"


@pytest.fixture(scope="module")
def emulator(module_emulator_starter):
    return module_emulator_starter(limits={"whisper": {"tpm": 0, "rpm": 600}})


@pytest.fixture
def container(azurite):
    """A new, empty container on Azurite."""
    with BlobServiceClient.from_connection_string(azurite) as service:
        yield service.create_container(f"audio-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def worker(azurite, emulator, start_worker):
    emulator.reset()
    return start_worker(
        **emulator.client_env(),
        APP_WHISPER_RPM_QUOTA="600",
        AZURE_STORAGE_CONNECTION_STRING=azurite,
    )


def transcribe(celery_app, audio_url: str) -> dict:
    """Send a ``transcribe`` message as the bridge would, and wait for its outcome."""
    return run_message(
        celery_app,
        redis_client(),
        "transcribe",
        {"id": "a-1", "taskId": "t-1", "audio_url": audio_url},
        in_queue="whisper_iq",
        out_queue="whisper_oq",
        message_id=f"m-{uuid.uuid4().hex[:8]}",
        timeout=RESULT_TIMEOUT_SECS,
    )


def test_a_blob_url_is_downloaded_with_the_account_key_and_transcribed(
    container, worker, celery_app
):
    blob = container.upload_blob("speech.wav", wav_bytes(synthesize(PHRASE)))
    assert blob.url.startswith("http://127.0.0.1:")  # Azurite: http on the configured endpoint

    outcome = transcribe(celery_app, blob.url)

    assert outcome["message"] == "SUCCESS", outcome
    assert outcome["transcript"] == {"text": "What is the weather today."}
    assert ACCOUNT_KEY not in worker.output()


def test_a_missing_blob_is_a_clear_failure(container, worker, celery_app):
    missing_url = f"{container.url}/nothing-here.wav"

    outcome = transcribe(celery_app, missing_url)

    assert outcome == {
        "id": "a-1",
        "taskId": "t-1",
        "message": "failed",
        "error": {"type": "InvalidInput", "detail": f"audio_url {missing_url!r}: no such blob"},
    }
    assert ACCOUNT_KEY not in worker.output() + json.dumps(outcome)


def test_plain_http_elsewhere_is_refused_without_showing_the_sas(monkeypatch, tmp_path):
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(port=10000))
    url = "http://storage.example/audio/speech.wav?sv=2024-11-04&sig=c2VjcmV0"
    with pytest.raises(InvalidInput, match="must be an https:// blob URL") as refused:
        download_blob(url, tmp_path / "speech.wav")
    assert "c2VjcmV0" not in str(refused.value) and "sig=REDACTED" in str(refused.value)
