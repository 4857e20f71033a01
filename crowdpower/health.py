"""``/healthz`` (the process answers) and ``/readyz`` (it can do its work).

Both are JSON, need no login and reveal nothing secret: check names, ``ok`` and a short
reason. ``/readyz`` checks PostgreSQL (``SELECT 1``), Redis (``PING``, only when
``REDIS_URL`` is set), that the database's Alembic revisions are the code's heads, and
that the installed plugins loaded; it answers 503 naming what failed. Each check has a
sub-second timeout, and the migration heads are read from disk once, so a load balancer
may poll every second.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from sqlalchemy import text

from crowdpower.extensions import db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    app = current_app._get_current_object()
    checks: dict[str, dict[str, Any]] = {}
    for name, check in (("database", _database), ("redis", _redis),
                        ("migrations", _migrations), ("plugins", _plugins)):
        started = time.monotonic()
        try:
            result = check(app)
        except Exception as exc:  # a reason, not a traceback or a URL
            result = {"ok": False, "error": type(exc).__name__}
        if result is None:
            continue
        result["ms"] = round((time.monotonic() - started) * 1000, 1)
        checks[name] = result
    ready = all(c["ok"] for c in checks.values())
    response = jsonify(status="ready" if ready else "unavailable", checks=checks)
    response.status_code = 200 if ready else 503
    response.headers["Cache-Control"] = "no-store"
    return response


def _database(app: Flask) -> dict:
    try:
        db.session.execute(text("SELECT 1"))
    finally:
        db.session.rollback()
    return {"ok": True}


def _redis(app: Flask) -> dict | None:
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


def _migrations(app: Flask) -> dict:
    heads = code_heads(app)
    try:
        applied = {row[0] for row in db.session.execute(
            text("SELECT version_num FROM alembic_version"))}
    except Exception:
        db.session.rollback()
        return {"ok": False, "error": "no alembic_version table: run crowdpower db upgrade"}
    db.session.rollback()
    missing = sorted(heads - applied)
    if missing:
        return {"ok": False, "error": "migrations pending: run crowdpower db upgrade",
                "pending": missing}
    return {"ok": True}


def _plugins(app: Flask) -> dict:
    pm = app.extensions.get("crowdpower.plugins")
    if pm is None:
        return {"ok": False, "error": "plugins not loaded"}
    names = sorted(info["name"] for info in pm.hook.crowdpower_plugin_info() if info)
    return {"ok": True, "loaded": names}


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
