"""Logging: JSON lines, context fields, the secret filter, and daily rotation with retention."""

from __future__ import annotations

import io
import json
import logging
import threading
import time

import pytest

from settings import configure_logging, get_logger, load_settings, log_context
from settings.logs import MASK, SecretFilter, file_handler, rotated_name


@pytest.fixture
def log_to_buffer(monkeypatch, restore_logging):
    """Configure logging as a process would, into a buffer."""
    monkeypatch.setenv("APP_OPENAI_API_KEY", "sk-topsecret-123")

    def configure(log_format: str) -> io.StringIO:
        monkeypatch.setenv("LOG_FORMAT", log_format)
        stream = io.StringIO()
        configure_logging(load_settings(), stream=stream)
        return stream

    return configure


@pytest.fixture
def json_stream(log_to_buffer):
    return log_to_buffer("json")


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_level_logger_and_message(json_stream):
    get_logger("conduit.test").warning("hello %s", "world")
    [line] = lines(json_stream)
    assert line["level"] == "WARNING" and line["logger"] == "conduit.test"
    assert line["message"] == "hello world" and "time" in line


def test_context_fields_reach_every_line_including_other_threads(json_stream):
    log = get_logger("conduit.test")
    with log_context(task_id="t-1", app_id="forms"):
        log.info("outer")
        with log_context(message_id="m-9"):
            log.info("inner")
    log.info("after")
    outer, inner, after = lines(json_stream)
    assert (outer["task_id"], outer["app_id"], outer.get("message_id")) == ("t-1", "forms", None)
    assert (inner["task_id"], inner["message_id"]) == ("t-1", "m-9")
    assert after.get("task_id") is None

    def in_thread():
        with log_context(session_id="s-1"):
            log.info("threaded")

    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join()
    assert lines(json_stream)[-1]["session_id"] == "s-1"


def test_unknown_context_field_is_refused():
    with pytest.raises(ValueError, match="unknown log context fields"), log_context(user="x"):
        pass


def test_secrets_are_masked_in_messages_and_tracebacks(json_stream):
    log = get_logger("conduit.test")
    log.info("calling with key sk-topsecret-123")
    log.info("header Authorization: Bearer eyJhbGciOi.payload.sig")
    log.info("conn Endpoint=sb://ns/;SharedAccessKeyName=x;SharedAccessKey=c2VjcmV0PQ==")
    try:
        raise RuntimeError("api_key=sk-topsecret-123 rejected")
    except RuntimeError:
        log.exception("failed")
    text = json_stream.getvalue()
    assert "sk-topsecret-123" not in text
    assert "eyJhbGciOi" not in text and "c2VjcmV0PQ" not in text
    assert text.count(MASK) >= 4


def test_secret_filter_masks_redis_passwords():
    redacted = SecretFilter().redact("connecting to redis://user:hunter22@cache:6380/0")
    assert "hunter22" not in redacted and "cache:6380" in redacted


def test_rotated_files_get_readable_names():
    assert rotated_name("/logs/conduit.log.2026-11-21") == "/logs/conduit.2026-11-21.log"


def test_midnight_rotation_keeps_retention_days_of_files(tmp_path):
    path = str(tmp_path / "conduit.log")
    handler = file_handler(path, retention_days=3)
    handler.setFormatter(logging.Formatter("%(message)s"))
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "line", None, None)
    day = 24 * 3600
    start = time.time() - 10 * day
    for offset in range(6):  # six days of logs, rolled over by hand instead of waiting a day
        handler.rolloverAt = int(start + offset * day)  # due: the next emit rolls over
        handler.emit(record)
    handler.close()
    rotated = sorted(p.name for p in tmp_path.iterdir() if p.name != "conduit.log")
    assert len(rotated) == 3
    assert all(name.startswith("conduit.") and name.endswith(".log") for name in rotated)


def test_console_format_shows_context_in_brackets(log_to_buffer):
    stream = log_to_buffer("console")
    with log_context(task_id="t-7"):
        get_logger("conduit.test").info("working")
    assert "INFO" in stream.getvalue()
    assert "conduit.test [task_id=t-7]: working" in stream.getvalue()


def test_every_extra_field_is_masked_nested_ones_too(json_stream):
    log = get_logger("conduit.test")
    sas = "https://a.blob.core.windows.net/c/x.wav?sv=1&sig=c2VjcmV0c2ln"
    log.info(
        "fetching",
        extra={"data": {"url": sas, "nested": [("token=abc123def", 1)]}, "key": "sk-topsecret-123"},
    )
    text = json_stream.getvalue()
    assert "c2VjcmV0c2ln" not in text and "abc123def" not in text
    assert "sk-topsecret-123" not in text
    [line] = lines(json_stream)
    assert line["data"]["url"].startswith("https://a.blob.core.windows.net/c/x.wav?sv=1&sig=")
