"""Settings: defaults, the older variable names, and one clear line for a bad value."""

from __future__ import annotations

import logging

import pytest

from settings import Route, SettingsError, load_settings


def test_defaults_are_the_embedded_laptop_setup(monkeypatch):
    settings = load_settings()
    assert settings.redis_url is None
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.embedded_openai and settings.uses_local_bus
    assert (settings.tpm_quota, settings.rpm_quota) == (128000, 250)
    assert (settings.embedding_tpm_quota, settings.embedding_rpm_quota) == (1000000, 6000)
    assert settings.embedding_engine == "text-embedding-3-large"
    assert settings.logs_retention_days == 30
    assert [(r.in_queue, r.processor, r.out_queue) for r in settings.routes] == [
        ("form_iq", "feedback", "form_oq"),
        ("whisper_iq", "transcribe", "whisper_oq"),
        ("reasoner_iq", "reasoner", "reasoner_oq"),
    ]


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        (
            "APP_OPENAI_API_BASE",
            "https://x.openai.azure.com/",
            "openai_api_base",
            "https://x.openai.azure.com/",
        ),
        ("APP_OPENAI_API_VERSION", "2024-02-01", "openai_api_version", "2024-02-01"),
        ("APP_OPENAI_ENGINE", "gpt-4", "openai_engine", "gpt-4"),
        ("APP_TPM_QUOTA", "1000", "tpm_quota", 1000),
        ("APP_RPM_QUOTA", "12", "rpm_quota", 12),
        ("APP_EMBEDDING_API_BASE", "https://e/", "embedding_api_base", "https://e/"),
        ("APP_EMBEDDING_API_VERSION", "2023-05-15", "embedding_api_version", "2023-05-15"),
        ("APP_EMBEDDING_ENGINE", "ada", "embedding_engine", "ada"),
        ("APP_EMBEDDING_TPM_QUOTA", "5", "embedding_tpm_quota", 5),
        ("APP_EMBEDDING_RPM_QUOTA", "6", "embedding_rpm_quota", 6),
        ("APP_WHISPER_RPM_QUOTA", "3", "whisper_rpm_quota", 3),
        ("WHISPER_REQUESTS_PER_MINUTE", "50", "whisper_rpm_quota", 50),
        (
            "APP_SEARCH_ENDPOINT",
            "https://s.search.windows.net",
            "search_endpoint",
            "https://s.search.windows.net",
        ),
        (
            "SERVICE_BUS_NAMESPACE",
            "ns.servicebus.windows.net",
            "service_bus_namespace",
            "ns.servicebus.windows.net",
        ),
        ("APP_LOGS_RETENTION_DAYS", "7", "logs_retention_days", 7),
        ("REDIS_URL", "redis://cache:6380/1", "redis_url", "redis://cache:6380/1"),
    ],
)
def test_older_variable_names_still_work(monkeypatch, variable, value, field, expected):
    monkeypatch.setenv(variable, value)
    assert getattr(load_settings(), field) == expected


def test_older_single_queue_pair_becomes_a_route(monkeypatch):
    monkeypatch.setenv("APP_SERVICE_IN_QUEUE", "legacy_iq")
    monkeypatch.setenv("APP_SERVICE_OUT_QUEUE", "legacy_oq")
    routes = load_settings().routes
    assert Route(in_queue="legacy_iq", processor="feedback", out_queue="legacy_oq") in routes


@pytest.mark.parametrize("text", ["a:b:c,d:e:f", '["a:b:c", "d:e:f"]'])
def test_routes_table_from_the_environment(monkeypatch, text):
    monkeypatch.setenv("CONDUIT_ROUTES", text)
    assert [r.processor for r in load_settings().routes] == ["b", "e"]


def test_counter_url_is_ignored_with_one_warning_line(monkeypatch, caplog):
    monkeypatch.setenv("COUNTER_APP_BASE_URL", "http://token-counter:8000")
    with caplog.at_level(logging.WARNING):
        load_settings()
    [record] = [r for r in caplog.records if "COUNTER_APP_BASE_URL" in r.getMessage()]
    assert "\n" not in record.getMessage() and "ignored" in record.getMessage()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("APP_TPM_QUOTA", "lots", r"^APP_TPM_QUOTA='lots' is not valid: .*integer"),
        ("APP_RPM_QUOTA", "0", r"^APP_RPM_QUOTA='0' is not valid: .*greater than or equal to 1"),
        ("WORKER_POOL", "fibers", r"^WORKER_POOL='fibers' is not valid: .*threads"),
        ("CONDUIT_ROUTES", "only:two", r"^CONDUIT_ROUTES=.* in_queue:processor:out_queue"),
        (
            "BROKER_VISIBILITY_TIMEOUT_SECONDS",
            "5",
            r"BROKER_VISIBILITY_TIMEOUT_SECONDS must exceed TASK_TIME_LIMIT_SECONDS",
        ),
    ],
)
def test_a_bad_value_fails_with_one_line_naming_the_variable(
    monkeypatch, variable, value, expected
):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=expected) as caught:
        load_settings()
    assert "\n" not in str(caught.value)


def test_secrets_never_show_in_repr_or_errors(monkeypatch):
    monkeypatch.setenv("APP_OPENAI_API_KEY", "sk-very-secret-value")
    monkeypatch.setenv("SERVICE_BUS_CONNECTION_STRING", "Endpoint=sb://x/;SharedAccessKey=abc123")
    settings = load_settings()
    assert "sk-very-secret-value" not in repr(settings)
    assert "abc123" not in repr(settings) and "abc123" not in str(settings.model_dump())
    assert settings.openai_api_key.get_secret_value() == "sk-very-secret-value"


def test_a_bad_secret_value_is_not_echoed(monkeypatch):
    monkeypatch.setenv("FLOWER_PORT", "99999999")
    monkeypatch.setenv("APP_OPENAI_API_KEY", "sk-also-secret")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "sk-also-secret" not in str(caught.value)


def test_dotenv_file_is_read(tmp_path):
    env_file = tmp_path / "conduit.env"
    env_file.write_text("APP_TPM_QUOTA=4242\n")
    assert load_settings(_env_file=str(env_file)).tpm_quota == 4242
