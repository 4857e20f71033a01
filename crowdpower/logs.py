"""Logging: one JSON line per record (``LOG_FORMAT=json``) or readable text, with the
request, project, job and event a record concerns, and secrets redacted.

Context travels in context variables: the request id (from ``X-Request-ID`` or made up,
echoed in the response), the job id (set by ``jobs.execute``), the tenant (from
``crowdpower.tenancy``) and whatever a plugin binds with ``bind(...)`` (e.g. the id of
the external event being applied). The redaction filter replaces every configured
secret value (keys, tokens, webhook secrets, passwords in URLs) and anything shaped like
an API key, bearer token or webhook signature, in the message and the traceback alike,
before any handler formats the record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, g, request

_request_id: ContextVar[str | None] = ContextVar("crowdpower_request_id", default=None)
_job_id: ContextVar[str | None] = ContextVar("crowdpower_job_id", default=None)
_bound: ContextVar[dict[str, Any] | None] = ContextVar("crowdpower_log_fields", default=None)

REDACTED = "[redacted]"
# Shapes of secrets, whoever logs them: API keys and tokens (sk_/rk_/pk_ live|test, App
# refresh tokens), webhook signing secrets and signatures, bearer tokens, URL passwords.
PATTERNS = [
    re.compile(r"\b(?:sk|rk|ek|rt|whsec|ac)_[A-Za-z0-9_-]{8,}"),
    re.compile(r"(?i)([?&](?:code|state|token|access_token|refresh_token|api_key|key)=)"
               r"[^&\s\"']+"),
    re.compile(r"\bv[01]=[0-9a-fA-F]{32,}"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)(\bpassword[\"']?\s*[:=]\s*[\"']?)[^\s\"',&]+"),
    re.compile(r"(?<=://)([^/@\s:]+):([^/@\s]+)@"),
]
SECRET_KEY_NAMES = re.compile(r"(SECRET|TOKEN|PASSWORD|_KEYS?$|DSN)")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def bind(**fields: Any) -> contextlib.AbstractContextManager:
    """Add fields to every record logged inside the ``with`` block (e.g. an event id)."""

    @contextlib.contextmanager
    def scope() -> Iterator[None]:
        token = _bound.set({**(_bound.get() or {}), **fields})
        try:
            yield
        finally:
            _bound.reset(token)

    return scope()


def set_job_id(job_id: str | None):
    return _job_id.set(job_id)


def reset_job_id(token) -> None:
    _job_id.reset(token)


def request_id() -> str | None:
    return _request_id.get()


class ContextFilter(logging.Filter):
    """Puts request id, project id, job id and bound fields on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        from crowdpower.tenancy import current_project_id

        record.request_id = _request_id.get()
        record.job_id = _job_id.get()
        try:
            record.project_id = current_project_id()
        except Exception:
            record.project_id = None
        for key, value in (_bound.get() or {}).items():
            setattr(record, key, value)
        return True


class RedactionFilter(logging.Filter):
    """Replaces secret values in a record's message, arguments and traceback."""

    def __init__(self) -> None:
        super().__init__()
        self.values: set[str] = set()

    def add_config(self, config: dict) -> None:
        """Learn the secret values of an app's configuration (names like *SECRET*,
        *TOKEN*, *PASSWORD*, *_KEY(S), *DSN*, and passwords inside *_URL settings)."""
        for name, value in config.items():
            if not isinstance(name, str) or not name.isupper():
                continue
            items = value if isinstance(value, (list, tuple)) else [value]
            for item in items:
                if not isinstance(item, str) or not item:
                    continue
                if SECRET_KEY_NAMES.search(name) and "PREFIX" not in name:
                    self.values.update(v.strip() for v in item.split(",") if len(v.strip()) >= 6)
                elif name.endswith("_URL") or name.endswith("_URI"):
                    password = urlsplit(item).password if "://" in item else None
                    if password and len(password) >= 4:
                        self.values.add(password)

    def redact(self, text: str) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, REDACTED)
        for pattern in PATTERNS:
            if pattern.groups == 2:
                text = pattern.sub(rf"\1:{REDACTED}@", text)
            elif pattern.groups == 1:
                text = pattern.sub(rf"\1{REDACTED}", text)
            else:
                text = pattern.sub(REDACTED, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        record.msg, record.args = self.redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            # formatters print the cached, redacted text; exc_info stays for whoever
            # inspects the exception itself (Sentry's logging integration, after us)
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context, traceback."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and value is not None and not key.startswith("_"):
                out[key] = value if isinstance(value, (str, int, float, bool)) else str(value)
        if record.exc_text:  # redacted by the filter
            out["exc"] = record.exc_text
        elif record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """Readable lines, with whatever context the record has at the end."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{k}={getattr(record, k)}" for k in
                           ("request_id", "project_id", "job_id", *(_bound.get() or {}))
                           if getattr(record, k, None) is not None)
        if context:
            head, sep, rest = line.partition("\n")
            line = f"{head} [{context}]{sep}{rest}"
        return line


REDACTION = RedactionFilter()
CONTEXT = ContextFilter()
_handler: logging.Handler | None = None


def make_handler(stream=None, fmt: str | None = None) -> logging.Handler:
    """A handler with our context, redaction and format (tests capture through one)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(CONTEXT)
    handler.addFilter(REDACTION)
    fmt = (fmt or os.environ.get("LOG_FORMAT") or "text").lower()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    return handler


def init_app(app: Flask) -> None:
    """Install the root handler once per process; every app teaches redaction its secrets."""
    global _handler
    REDACTION.add_config(app.config)
    if _handler is None and not app.config.get("TESTING"):
        _handler = make_handler(fmt=app.config.get("LOG_FORMAT"))
        root = logging.getLogger()
        root.addHandler(_handler)
        level = (app.config.get("LOG_LEVEL") or os.environ.get("LOG_LEVEL") or "INFO").upper()
        root.setLevel(level)

    @app.before_request
    def _request_context() -> None:
        given = request.headers.get("X-Request-ID", "")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        g._crowdpower_request_token = _request_id.set(rid)

    @app.after_request
    def _echo_request_id(response):
        rid = _request_id.get()
        if rid:
            response.headers["X-Request-ID"] = rid
        return response

    @app.teardown_request
    def _forget_request_id(_exc) -> None:
        token = g.pop("_crowdpower_request_token", None)
        if token is not None:
            try:
                _request_id.reset(token)
            except ValueError:  # reset from another context (streamed responses)
                _request_id.set(None)
