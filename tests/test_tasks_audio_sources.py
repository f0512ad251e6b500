"""What a message may make a worker read: local files under one root, blobs on our account with
our credentials, SAS URLs on Azure blob hosts with their own token; nothing else."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from settings import get_settings
from tasks.ai_tasks import transcription_work
from tasks.audio_sources import _blob_credential, download_blob, local_audio, parse_blob_url
from tasks.errors import InvalidInput, PermanentError
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


def test_the_transcribe_audio_task_reads_local_paths_by_the_same_rule(monkeypatch, tmp_path):
    monkeypatch.delenv("AUDIO_LOCAL_ROOT", raising=False)
    with pytest.raises(InvalidInput, match="set AUDIO_LOCAL_ROOT"):
        transcription_work("/etc/passwd")
    root = tmp_path / "audio"
    root.mkdir()
    monkeypatch.setenv("AUDIO_LOCAL_ROOT", str(root))
    get_settings.cache_clear()
    for escape in ["/etc/passwd", str(root / ".." / "elsewhere.wav")]:
        with pytest.raises(InvalidInput, match="outside AUDIO_LOCAL_ROOT"):
            transcription_work(escape)


# The host a parser that ends at the first "@" sees is Azure's; the one requests/urllib3
# connects to is 127.0.0.1 (a backslash ends the authority for them, as in browsers).
BACKSLASH_BYPASS = "https://127.0.0.1:6379\\@x.blob.core.windows.net/c/a.wav?sv=1&sig=c2VjcmV0"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (BACKSLASH_BYPASS, "backslash"),
        ("https://127.0.0.1:6379%5C@x.blob.core.windows.net/c/a.wav?sig=c2VjcmV0", "userinfo"),
        ("https://user:pw@x.blob.core.windows.net/c/a.wav?sig=c2VjcmV0", "userinfo"),
        ("https://x.blob.core.windows.net@127.0.0.1/c/a.wav?sig=c2VjcmV0", "userinfo"),
        ("https://x.blob.core.windows.net /c/a.wav?sig=c2VjcmV0", "whitespace"),
        ("https://x.blob.core.windows.net\t/c/a.wav?sig=c2VjcmV0", "control"),
    ],
)
def test_an_audio_url_two_parsers_read_differently_is_refused(url, problem):
    with pytest.raises(InvalidInput, match=problem) as refused:
        _blob_credential(url, None)
    assert "c2VjcmV0" not in str(refused.value)


def test_the_host_checked_is_the_host_the_sdk_connects_to():
    from azure.storage.blob import BlobClient
    from urllib3.util import parse_url

    url = "https://partner.blob.core.windows.net:443/c/a%20b.wav?sv=1&sig=c2VjcmV0"
    parsed = parse_blob_url(url)
    assert (parsed.host, parsed.port) == ("partner.blob.core.windows.net", 443)
    with BlobClient.from_blob_url(parsed.url, credential=None) as blob:
        connects_to = parse_url(blob.url)
    assert (connects_to.host, connects_to.port or 443) == (parsed.host, parsed.port)


def test_a_local_audio_url_download_never_leaves_for_the_bypass_host(tmp_path):
    with pytest.raises(InvalidInput, match="backslash"):
        local_audio(tmp_path, url=BACKSLASH_BYPASS)


def test_a_redirect_from_the_account_is_not_followed(monkeypatch, tmp_path):
    """Our own account's endpoint answering 307 must not send the signed request elsewhere."""
    elsewhere_hits: list[str] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            elsewhere_hits.append(self.headers.get("Authorization", ""))
            self.send_response(200)
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *args: object) -> None:
            pass

    elsewhere = ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)

    class Redirecting(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{elsewhere.server_port}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *args: object) -> None:
            pass

    account = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threads = [
        threading.Thread(target=server.serve_forever, daemon=True)
        for server in (elsewhere, account)
    ]
    for thread in threads:
        thread.start()
    try:
        monkeypatch.setenv(
            "AZURE_STORAGE_CONNECTION_STRING", connection_string(port=account.server_port)
        )
        get_settings.cache_clear()
        url = f"http://127.0.0.1:{account.server_port}/devstoreaccount1/audio/a.wav"
        with pytest.raises(PermanentError, match="307"):
            download_blob(url, tmp_path / "a.wav")
    finally:
        for server in (elsewhere, account):
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join()
    assert elsewhere_hits == []
