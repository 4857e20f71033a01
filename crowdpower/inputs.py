"""One gate for hostile input, before any view sees it.

Every request's query string, form fields and path values, and every JSON body the API
reads, are refused with a 400 when they carry what no handler means to accept and what
databases refuse: NUL characters, lone UTF-16 surrogates, non-finite numbers
(``NaN``, ``Infinity``, ``1e400``), integers beyond 64 bits, nesting deeper than
``MAX_DEPTH``. Values the database still refuses (``DataError``) are a 400, and a unique
constraint lost to a concurrent request (``IntegrityError``) a 409, and a database that
is down a 503 — never a 500.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from flask import Flask, jsonify, request
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from werkzeug.exceptions import BadRequest, Conflict, HTTPException, RequestEntityTooLarge

from crowdpower.extensions import db

MAX_DEPTH = 32
MAX_INT = 2**63 - 1
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")


class BadInput(ValueError):
    """The input can never be valid; the message says why (safe to show), ``field`` the
    top-level JSON key it was found under (None: the body as a whole)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def check_text(value: str, where: str) -> str:
    if _BAD_CHARS.search(value):
        raise BadInput(f"{where}: NUL characters and lone surrogates are not allowed")
    return value


def check_json(value: Any, where: str = "body", depth: int = 0) -> Any:
    """Walk a parsed JSON value; raise ``BadInput`` at the first unacceptable part."""
    if depth > MAX_DEPTH:
        raise BadInput(f"{where}: nested more than {MAX_DEPTH} levels")
    if isinstance(value, str):
        check_text(value, where)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise BadInput(f"{where}: numbers must be finite")
    elif isinstance(value, int):
        if abs(value) > MAX_INT:
            raise BadInput(f"{where}: integer out of range")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, where)
            check_json(item, f"{where}.{key}"[:200], depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_json(item, f"{where}[{i}]"[:200], depth + 1)
    return value


def _top_field(where: str) -> str | None:
    match = re.match(r"body\.([A-Za-z_][A-Za-z0-9_]*)", where)
    return match.group(1) if match else None


def parse_json(raw: bytes) -> Any:
    """Strict JSON: no NaN/Infinity; every string and number checked."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("body: not UTF-8") from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise BadInput("body: nested too deeply") from None
    except ValueError as exc:
        raise BadInput(f"body: not JSON ({exc})") from None
    try:
        return check_json(value)
    except BadInput as exc:
        raise BadInput(str(exc), _top_field(str(exc).split(":", 1)[0])) from None


def _check_request() -> None:
    try:
        for where, mapping in (("query", request.args), ("path", request.view_args or {})):
            for key, value in (mapping.items(multi=True) if hasattr(mapping, "getlist")
                               else mapping.items()):
                check_text(str(key), where)
                check_text(str(value), f"{where} {key}"[:100])
        if request.method in ("POST", "PUT", "PATCH") and request.mimetype in (
                "application/x-www-form-urlencoded", "multipart/form-data"):
            for key, value in request.form.items(multi=True):
                check_text(key, "form")
                check_text(value, f"form {key}"[:100])
    except BadInput as exc:
        raise BadRequest(str(exc)) from None


def _is_api() -> bool:
    return request.path.startswith("/api/")


def _error(status: int, code: str, message: str):
    if _is_api():
        response = jsonify({"error": {"code": code, "message": message}})
        response.status_code = status
        return response
    return message, status


MAX_BODY = 2 * 1024 * 1024  # any request body; the largest legitimate ones are templates


def init_app(app: Flask) -> None:
    if app.config.get("MAX_CONTENT_LENGTH") is None:  # Werkzeug refuses more, unread: 413
        app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.before_request(_check_request)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(_exc: RequestEntityTooLarge):
        return _error(413, "too_large", "The request body is too large.")

    @app.errorhandler(BadRequest)
    def _bad_request(exc: BadRequest):
        return _error(400, "invalid_request", exc.description or "Bad request.")

    @app.errorhandler(DataError)
    def _data_error(_exc: DataError):
        db.session.rollback()
        return _error(400, "invalid_value", "A value is out of range or not acceptable.")

    @app.errorhandler(IntegrityError)
    def _integrity_error(_exc: IntegrityError):
        db.session.rollback()
        return _error(409, "conflict", "A concurrent request changed this; try again.")

    @app.errorhandler(OperationalError)
    def _database_down(_exc: OperationalError):
        try:
            db.session.rollback()
        except Exception:  # the connection is gone; the pool replaces it
            pass
        response = _error(503, "unavailable", "The database is unavailable; try again.")
        return response

    @app.errorhandler(Conflict)
    def _conflict(exc: HTTPException):
        return _error(409, "conflict", exc.description or "Conflict.")
