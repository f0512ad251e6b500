"""Logging for every Conduit process: one set-up, context fields, and no secrets in any line.

- Console: coloured on a TTY, JSON lines otherwise (``LOG_FORMAT`` forces one or the other).
- Files (``LOG_DIR`` set): ``<dir>/<app>.log``, rotated at midnight into ``<app>.YYYY-MM-DD.log``,
  keeping ``APP_LOGS_RETENTION_DAYS`` of them.
- Context: ``with log_context(task_id=..., app_id=...):`` adds those fields to every line logged
  inside the block, threads and asyncio tasks included (contextvars).
- Secrets: every line passes :class:`SecretFilter`, which masks the configured secret values and
  anything shaped like a key, bearer token, password or connection-string credential, in the
  message, the traceback and every extra field of the record (nested values included).
- Bodies: message bodies are not logged. A process whose libraries log them (a Celery worker:
  see worker/log_bodies.py) passes a filter that replaces them with their sizes as
  ``extra_filters``; it runs before the secret filter.

In a process's entry point (it configures the process's root logger)::

    configure_logging(get_settings())
    log = get_logger(__name__)
    with log_context(task_id="t-1"):
        log.info("started")
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from logging.handlers import TimedRotatingFileHandler

import colorlog
from opentelemetry import trace
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from settings.config import Settings
from settings.logship import log_shipping_active

CONTEXT_FIELDS = ("app_id", "task_id", "message_id", "session_id")
_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "conduit_log_context", default=None
)

MASK = "***"
# Shapes of credentials that may reach a log line through an exception or a URL.
_SECRET_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-._~+/]+=*"),
    re.compile(
        r"(?i)((?:api[-_]?key|password|secret|token|sig|AccountKey|SharedAccessKey)"
        r"\s*[=:]\s*[\"']?)[^\s\"';&,]+"
    ),
    re.compile(r"(?i)(redis://[^:/@\s]*:)[^@\s]+(?=@)"),
]
# Attributes every LogRecord has; anything else on a record came from ``extra`` or a filter.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}
# How deep the secret filter follows nested extra values (Celery's are one or two levels).
MAX_REDACT_DEPTH = 6


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add fields (app_id, task_id, message_id, session_id) to every line logged in the block."""
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise ValueError(f"unknown log context fields {sorted(unknown)}; use {CONTEXT_FIELDS}")
    merged = {**(_context.get() or {}), **{k: str(v) for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the current log context onto each record, so formatters can print it, and the
    active span's ``trace_id`` / ``span_id`` (W3C hex) when tracing is on, so a log line leads
    to its trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (_context.get() or {}).items():
            setattr(record, name, value)
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = format(span_context.trace_id, "032x")
            record.span_id = format(span_context.span_id, "016x")
        return True


class SecretFilter(logging.Filter):
    """Masks known secret values and credential-shaped text in the rendered message."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so a secret containing another is masked whole.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        return text

    def redact_value(self, value: object, depth: int = 0) -> object:
        """``value`` with every string in it redacted (mappings, lists and tuples followed);
        an exception becomes its redacted text, since its arguments may quote a secret."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, BaseException):
            return self.redact(f"{type(value).__name__}: {value}")
        if depth >= MAX_REDACT_DEPTH:
            return value
        if isinstance(value, Mapping):
            return {key: self.redact_value(item, depth + 1) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.redact_value(item, depth + 1) for item in value)
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        for name, value in list(vars(record).items()):
            if name not in _STANDARD_ATTRS:
                setattr(record, name, self.redact_value(value))
        if record.exc_info:
            # Render the traceback now, masked; formatters print exc_text when exc_info is gone.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def secret_values(settings: Settings) -> list[str]:
    """Every SecretStr value in settings (plus the password inside REDIS_URL, if any)."""
    values = [
        value.get_secret_value()
        for value in settings.__dict__.values()
        if hasattr(value, "get_secret_value")
    ]
    match = re.search(r"://[^:/@]*:([^@]+)@", settings.redis_url or "")
    if match:
        values.append(match.group(1))
    return values


def _console_formatter(use_colour: bool) -> logging.Formatter:
    fmt = "%(asctime)s %(levelname)-7s %(name)s%(context)s: %(message)s"
    if use_colour:
        return colorlog.ColoredFormatter(
            "%(log_color)s" + fmt.replace("%(levelname)-7s", "%(levelname)-7s%(reset)s")
        )
    return logging.Formatter(fmt)


class _ContextSuffix(logging.Filter):
    """Renders the context fields as ` [task_id=... app_id=...]` for the console format."""

    def filter(self, record: logging.LogRecord) -> bool:
        names = (*CONTEXT_FIELDS, "trace_id")
        pairs = [f"{n}={getattr(record, n)}" for n in names if getattr(record, n, None)]
        record.context = f" [{' '.join(pairs)}]" if pairs else ""
        return True


def _json_formatter() -> logging.Formatter:
    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        # `context` is the console's rendering of the context fields, which JSON has as keys.
        reserved_attrs=[*RESERVED_ATTRS, "context"],
    )


def _with_filters(handler: logging.Handler, filters: list[logging.Filter]) -> logging.Handler:
    for f in filters:
        handler.addFilter(f)
    return handler


def rotated_name(default_name: str) -> str:
    """``dir/conduit.log.2026-11-22`` → ``dir/conduit.2026-11-22.log`` (sorts and opens well)."""
    directory, name = os.path.split(default_name)
    base, _, date = name.rpartition(".")
    stem, _, ext = base.rpartition(".")
    return os.path.join(directory, f"{stem}.{date}.{ext}")


def file_handler(path: str, retention_days: int) -> TimedRotatingFileHandler:
    handler = TimedRotatingFileHandler(
        path, when="midnight", backupCount=retention_days, encoding="utf-8", delay=True
    )
    handler.namer = rotated_name
    return handler


def configure_logging(
    settings: Settings, stream=None, extra_filters: Iterable[logging.Filter] = ()
) -> None:
    """Replace the root logger's handlers with Conduit's; safe to call more than once.
    ``extra_filters`` run on every record before the secret filter."""
    stream = stream or sys.stderr
    is_tty = hasattr(stream, "isatty") and stream.isatty()
    use_json = settings.log_format == "json" or (settings.log_format == "auto" and not is_tty)
    filters: list[logging.Filter] = [
        ContextFilter(),
        _ContextSuffix(),
        *extra_filters,
        SecretFilter(secret_values(settings)),
    ]

    console = logging.StreamHandler(stream)
    console.setFormatter(_json_formatter() if use_json else _console_formatter(is_tty))
    handlers: list[logging.Handler] = [_with_filters(console, filters)]

    if settings.log_dir:
        os.makedirs(settings.log_dir, exist_ok=True)
        path = os.path.join(settings.log_dir, f"{settings.app_name}.log")
        # With log shipping on, the monitor deletes rotated files once uploaded (logship/).
        keep = 0 if log_shipping_active(settings) else settings.logs_retention_days
        rotating = file_handler(path, keep)
        rotating.setFormatter(_json_formatter())
        handlers.append(_with_filters(rotating, filters))

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(settings.log_level)


def get_logger(name: str) -> logging.Logger:
    """A named logger; output goes wherever :func:`configure_logging` pointed the root."""
    return logging.getLogger(name)
