"""JSON-lines logging, with the delivery id or build id of the work at hand on every line.

``delivery_context``/``build_context`` set a context variable; a filter copies
it onto each record, so a handler's ``log.info("...")`` carries the delivery id
without passing it around. Known secret values are masked in every line.
``serve`` calls :func:`setup_logging` once; nothing happens at import.
"""
from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

_delivery_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("delivery_id", default=None)
_build_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("build_id", default=None)

# attributes every LogRecord has; anything else on a record came from ``extra=``
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_CONTEXT_FIELDS = ("delivery_id", "build_id")
REDACTED = "[redacted]"


@contextlib.contextmanager
def delivery_context(delivery_id: str | None) -> Iterator[None]:
    """Tag every log line in this block (and tasks started in it) with ``delivery_id``."""
    token = _delivery_id.set(delivery_id)
    try:
        yield
    finally:
        _delivery_id.reset(token)


@contextlib.contextmanager
def build_context(build_id: str | int | None) -> Iterator[None]:
    token = _build_id.set(None if build_id is None else str(build_id))
    try:
        yield
    finally:
        _build_id.reset(token)


def current_delivery_id() -> str | None:
    return _delivery_id.get()


class ContextFilter(logging.Filter):
    """Copy the context's delivery/build id onto the record (an explicit ``extra=`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "delivery_id", None) is None:
            record.delivery_id = _delivery_id.get()
        if getattr(record, "build_id", None) is None:
            record.build_id = _build_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, delivery_id/build_id, extras, exc."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # longest first, so a secret containing another is masked whole
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        for key, value in record.__dict__.items():
            if key in _STANDARD or key in out or key in _CONTEXT_FIELDS or key.startswith("_"):
                continue
            out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = record.stack_info
        line = json.dumps(out, ensure_ascii=False, default=repr)
        for s in self._secrets:
            if s in line:
                line = line.replace(s, REDACTED)
        return line


def setup_logging(level: str | int | None = None, *, stream: IO[str] | None = None,
                  secrets: Iterable[str] = ()) -> logging.Handler:
    """Route all logging to ``stream`` (stderr) as JSON lines; returns the handler installed.

    ``level`` defaults to ``LOG_LEVEL`` from the environment, then INFO. ``secrets``
    are values that must never appear in a log line (webhook secret, private key, tokens).
    """
    level = level or os.environ.get("LOG_LEVEL", "INFO")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(secrets))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_binder_prebuild", False):
            root.removeHandler(old)
    handler._binder_prebuild = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    return handler


def settings_secrets(settings: Any) -> list[str]:
    """The secret values in a Settings object (for ``setup_logging(secrets=...)``)."""
    values = [getattr(settings, name, None) for name in
              ("github_webhook_secret", "github_private_key", "jupyterhub_api_token")]
    out: list[str] = []
    for v in values:
        if isinstance(v, str) and v:
            out.append(v)
            # a PEM also leaks line by line, and JSON-escaped
            out.extend(line for line in v.splitlines() if len(line) >= 16 and "-----" not in line)
            out.append(json.dumps(v)[1:-1])
    return out
