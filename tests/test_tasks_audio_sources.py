"""What a message may make a worker read: local files under one root, blobs on our account with
our credentials, SAS URLs on Azure blob hosts with their own token; nothing else."""

from __future__ import annotations

import pytest

from settings import get_settings
from tasks.audio_sources import _blob_credential, local_audio
from tasks.errors import InvalidInput
from tests.support.azurite import connection_string


def account():
    return dict(part.split("=", 1) for part in connection_string(port=10000).split(";") if part)


def test_local_paths_are_refused_unless_a_root_is_configured(monkeypatch, tmp_path):
    monkeypatch.delenv("AUDIO_LOCAL_ROOT", raising=False)
    with pytest.raises(InvalidInput, match="set AUDIO_LOCAL_ROOT"):
        local_audio(tmp_path, path="/etc/passwd")


def test_local_paths_must_stay_inside_the_root(monkeypatch, tmp_path):
    root = tmp_path / "audio"
    root.mkdir()
    (tmp_path / "secret.wav").write_bytes(b"RIFF")
    monkeypatch.setenv("AUDIO_LOCAL_ROOT", str(root))
    for escape in [str(tmp_path / "secret.wav"), str(root / ".." / "secret.wav")]:
        with pytest.raises(InvalidInput, match="outside AUDIO_LOCAL_ROOT"):
            local_audio(tmp_path, path=escape)
    (root / "link.wav").symlink_to(tmp_path / "secret.wav")
    with pytest.raises(InvalidInput, match="outside AUDIO_LOCAL_ROOT"):
        local_audio(tmp_path, path=str(root / "link.wav"))


def test_our_credentials_go_only_to_our_account(monkeypatch):
    ours = "http://127.0.0.1:10000/devstoreaccount1/audio/a.wav"
    assert _blob_credential(ours, account())["account_name"] == "devstoreaccount1"
    for elsewhere in [
        "https://attacker.blob.core.windows.net/c/a.wav",
        "https://example.com/devstoreaccount1/audio/a.wav",
    ]:
        with pytest.raises(InvalidInput, match="not on the configured storage account"):
            _blob_credential(elsewhere, account())


def test_with_entra_id_only_the_configured_account_url_gets_a_token(monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_URL", "https://ours.blob.core.windows.net")
    with pytest.raises(InvalidInput, match="not on the configured storage account"):
        _blob_credential("https://theirs.blob.core.windows.net/c/a.wav", None)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_URL")
    get_settings.cache_clear()  # settings are read once per process
    with pytest.raises(InvalidInput, match="not on the configured storage account"):
        _blob_credential("https://ours.blob.core.windows.net/c/a.wav", None)


def test_a_sas_url_needs_no_credential_but_must_be_an_azure_blob_host():
    sas = "https://partner.blob.core.windows.net/c/a.wav?sv=2024-11-04&sig=c2VjcmV0"
    assert _blob_credential(sas, None) is None
    with pytest.raises(InvalidInput, match="not an Azure blob URL") as refused:
        _blob_credential("https://10.0.0.5/internal?sig=c2VjcmV0", None)
    assert "c2VjcmV0" not in str(refused.value)
