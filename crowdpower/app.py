"""The application factory: a flat list of ``init_app`` calls."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from flask import Flask, current_app
from sqlalchemy import event
from sqlalchemy.engine import Engine

from crowdpower import api, auth, inputs, jobs, openapi, plugins, security, tenancy, web
from crowdpower.config import ensure_secret_key, from_environment
from crowdpower.extensions import csrf, db, migrate


def _migrations_dir() -> Path:
    """The top-level ``migrations/`` of a checkout, or the copy packaged in the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "migrations", here / "_migrations"):
        if (candidate / "env.py").exists():
            return candidate
    return here.parent / "migrations"


MIGRATIONS_DIR = _migrations_dir()


@migrate.configure
def _version_locations(alembic_config):
    """Alembic reads the host's versions and every plugin's own branch."""
    dirs = [str(MIGRATIONS_DIR / "versions")]
    for batch in plugins.get_pm_for(current_app).hook.crowdpower_migration_dirs():
        dirs += [str(d) for d in batch or []]
    alembic_config.set_main_option("path_separator", "os")
    alembic_config.set_main_option("version_path_separator", "os")
    alembic_config.set_main_option("version_locations", os.pathsep.join(dirs))
    return alembic_config


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.from_mapping(from_environment(app.instance_path))
    app.config.update(config or {})
    ensure_secret_key(app.config)
    _sqlite_options(app)

    tenancy.install()
    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR), compare_type=True)
    csrf.init_app(app)
    plugins.init_app(app)
    jobs.init_app(app)
    auth.init_app(app)
    inputs.init_app(app)
    security.init_app(app)


    web.init_app(app)
    security.throttle_login(app)
    api.init_app(app)
    openapi.init_app(app)
    pm = plugins.get_pm_for(app)
    pm.hook.crowdpower_register_blueprints(app=app)
    return app


def _sqlite_options(app: Flask) -> None:
    """SQLite: wait on locks instead of failing (the in-process job thread writes too)."""
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        options = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
        options.setdefault("connect_args", {"timeout": 30})
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options

        if not event.contains(Engine, "connect", _sqlite_pragmas):
            event.listen(Engine, "connect", _sqlite_pragmas)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()
