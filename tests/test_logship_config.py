"""Which account and credential log shipping uses, when it is on, and how SDK errors read (no
servers)."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError

from logship.account import StorageAccount
from logship.errors import PermanentUploadError, TransientUploadError, classify
from logship.process import monitor_from_settings
from settings import get_settings
from settings.logship import log_shipping_active
from tests.support.azurite import ACCOUNT_KEY, connection_string


def test_a_connection_string_wins_over_the_account_url(monkeypatch):
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_URL", "https://acct.blob.core.windows.net")
    assert StorageAccount.from_settings(get_settings()).account_url == (
        "https://acct.blob.core.windows.net"
    )
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(10000))
    get_settings.cache_clear()
    account = StorageAccount.from_settings(get_settings())
    assert account.connection_string and account.account_url is None
    assert ACCOUNT_KEY not in repr(account)
    assert account.credential_setting == "AZURE_STORAGE_CONNECTION_STRING"


def test_the_older_account_name_means_the_public_cloud_url():
    assert StorageAccount.named("mystorageaccount").account_url == (
        "https://mystorageaccount.blob.core.windows.net"
    )
    with pytest.raises(ValueError, match="AZURE_STORAGE_CONNECTION_STRING"):
        StorageAccount()


def test_shipping_is_on_only_with_a_log_dir_and_an_account(monkeypatch, tmp_path):
    assert not log_shipping_active(get_settings())
    monkeypatch.setenv("LOG_DIR", str(tmp_path))
    get_settings.cache_clear()
    assert not log_shipping_active(get_settings()) and monitor_from_settings(get_settings()) is None
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_URL", "https://acct.blob.core.windows.net")
    get_settings.cache_clear()
    assert log_shipping_active(get_settings())
    monkeypatch.setenv("LOG_SHIPPING_ENABLED", "false")
    get_settings.cache_clear()
    assert not log_shipping_active(get_settings())


def test_a_bad_container_name_is_refused_naming_the_setting(monkeypatch):
    from settings import SettingsError, load_settings

    monkeypatch.setenv("LOG_SHIPPING_CONTAINER", "Logs_Here")
    with pytest.raises(SettingsError, match=r"^LOG_SHIPPING_CONTAINER="):
        load_settings()


def test_sdk_errors_become_one_line_transient_or_permanent_errors():
    refused = HttpResponseError(message="Server failed to authenticate.\nRequestId: 1")
    refused.status_code = 403
    busy = HttpResponseError(message="Server busy")
    busy.status_code = 503
    down = classify(ServiceRequestError("Connection refused"), "AZURE_STORAGE_CONNECTION_STRING")

    assert isinstance(down, TransientUploadError) and down.reconnect
    assert isinstance(classify(busy, "X"), TransientUploadError)
    auth = classify(refused, "AZURE_STORAGE_CONNECTION_STRING")
    assert isinstance(auth, PermanentUploadError)
    assert str(auth) == (
        "blob storage refused our credentials; check AZURE_STORAGE_CONNECTION_STRING "
        "(Server failed to authenticate.)"
    )
    assert isinstance(classify(FileNotFoundError("gone.log"), "X"), PermanentUploadError)
