"""``/healthz`` (the process answers) and ``/readyz`` (it can do its work).

Both are JSON, need no login and reveal nothing secret: check names, ``ok`` and a short
reason (an exception's class name, never its text: that may hold a host or a URL).
``/readyz`` checks PostgreSQL (``SELECT 1``), Redis (``PING``, only when ``REDIS_URL`` is
set), that the database's Alembic revisions are the code's heads, and that every plugin
answers; it answers 503 naming what failed, whatever failed. A probe never loads the
login (a cookie must not send it to the database first) and talks to PostgreSQL through a
small engine of its own with a 2 s connect timeout and a 1 s statement timeout, so a
database that is down, hung or out of connections makes it answer "not ready" in seconds
instead of hanging; the migration heads are read from disk once. A load balancer may
poll every second.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from sqlalchemy import Connection, Engine, create_engine, inspect, text
from sqlalchemy.exc import OperationalError

from crowdpower.auth import sessionless
from crowdpower.extensions import db

bp = Blueprint("health", __name__)
CONNECT_TIMEOUT_S = 2  # libpq's minimum
STATEMENT_TIMEOUT_MS = 1000


@bp.get("/healthz")
@sessionless
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
@sessionless
def readyz():
    app = current_app._get_current_object()
    checks: dict[str, dict[str, Any]] = {}
    conn: Connection | None = None
    try:
        started = time.monotonic()
        try:
            conn = _connect(app)
            checks["database"] = _database(conn)
        except Exception as exc:
            checks["database"] = _failed(exc)
        _timed(checks["database"], started)
        for name, check in (("redis", _redis), ("migrations", _migrations),
                            ("plugins", _plugins)):
            started = time.monotonic()
            try:
                result = check(app, conn if checks["database"]["ok"] else None)
            except Exception as exc:  # a reason, not a traceback or a URL
                result = _failed(exc)
            if result is not None:
                checks[name] = _timed(result, started)
    finally:
        if conn is not None:
            try:
                conn.close()
            except Exception:  # a broken connection: the pool throws it away
                pass
    ready = all(c["ok"] for c in checks.values())
    response = jsonify(status="ready" if ready else "unavailable", checks=checks)
    response.status_code = 200 if ready else 503
    response.headers["Cache-Control"] = "no-store"
    return response


def _failed(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, OperationalError):
        return {"ok": False, "error": f"unavailable ({type(exc.orig or exc).__name__})"}
    return {"ok": False, "error": type(exc).__name__}


def _timed(result: dict[str, Any], started: float) -> dict[str, Any]:
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


def probe_engine(app: Flask) -> Engine:
    """PostgreSQL: a two-connection engine of the probe's own, with short timeouts (the
    app's pool may be exhausted, or wait 30 s for a connection). SQLite: the app's."""
    engine = app.extensions.get("crowdpower.health.engine")
    if engine is None:
        engine = db.engine
        if engine.dialect.name == "postgresql":
            engine = create_engine(engine.url, pool_size=1, max_overflow=1, pool_timeout=1,
                                   pool_pre_ping=True, pool_recycle=300,
                                   connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
        app.extensions["crowdpower.health.engine"] = engine
    return engine


def _connect(app: Flask) -> Connection:
    conn = probe_engine(app).connect()
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
    return conn


def _database(conn: Connection) -> dict:
    conn.execute(text("SELECT 1"))
    return {"ok": True}


def _redis(app: Flask, _conn: Connection | None) -> dict | None:
    if not app.config.get("REDIS_URL"):
        return None
    client = app.extensions.get("crowdpower.health.redis")
    if client is None:
        from redis import Redis

        client = Redis.from_url(app.config["REDIS_URL"], socket_connect_timeout=0.5,
                                socket_timeout=0.5)
        app.extensions["crowdpower.health.redis"] = client
    client.ping()
    return {"ok": True}


def code_heads(app: Flask) -> set[str]:
    """The Alembic heads of the code (host and every plugin branch), read once."""
    heads = app.extensions.get("crowdpower.health.heads")
    if heads is None:
        from alembic.script import ScriptDirectory

        migrate = app.extensions["migrate"]
        config = migrate.migrate.get_config(migrate.directory)
        heads = set(ScriptDirectory.from_config(config).get_heads())
        app.extensions["crowdpower.health.heads"] = heads
    return heads


def _migrations(app: Flask, conn: Connection | None) -> dict:
    if conn is None:
        return {"ok": False, "error": "not checked: database unavailable"}
    heads = code_heads(app)
    if not inspect(conn).has_table("alembic_version"):
        return {"ok": False, "error": "no alembic_version table: run crowdpower db upgrade"}
    applied = {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}
    missing = sorted(heads - applied)
    if missing:
        return {"ok": False, "error": "migrations pending: run crowdpower db upgrade",
                "pending": missing}
    return {"ok": True}


def _plugins(app: Flask, _conn: Connection | None) -> dict:
    """Every registered plugin answers ``crowdpower_plugin_info`` (one that raises is
    named: it is installed but not working)."""
    pm = app.extensions.get("crowdpower.plugins")
    if pm is None:
        return {"ok": False, "error": "plugins not loaded"}
    loaded, broken = [], []
    for impl in pm.hook.crowdpower_plugin_info.get_hookimpls():
        try:
            info = impl.function()
        except Exception as exc:
            broken.append(f"{impl.plugin_name}: {type(exc).__name__}")
            continue
        if info:
            loaded.append(info["name"])
    if broken:
        return {"ok": False, "error": "plugins failing", "failing": sorted(broken),
                "loaded": sorted(loaded)}
    return {"ok": True, "loaded": sorted(loaded)}


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
