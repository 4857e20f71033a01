"""The revenue feature's hook implementations (an internal plugin of the host)."""

from __future__ import annotations

from crowdpower.plugins import hookimpl
from crowdpower.revenue import models  # noqa: F401  (tables exist for create_all/Alembic)

CONFIG_DEFAULTS = {
    # Seconds between snapshot runs; each run replaces today's snapshot (idempotent).
    "REVENUE_SNAPSHOT_INTERVAL": 3600,
    # Per-customer snapshot rows older than this are dropped (0: keep all); the daily
    # totals and movements keep the history.
    "REVENUE_SNAPSHOT_RETENTION_DAYS": 400,
}


@hookimpl
def crowdpower_load_config(config):
    import os

    for key, value in CONFIG_DEFAULTS.items():
        raw = os.environ.get(key)
        if key not in config and raw not in (None, ""):
            config[key] = type(value)(raw)
        config.setdefault(key, value)


@hookimpl
def crowdpower_register_blueprints(app):
    from crowdpower.extensions import csrf
    from crowdpower.revenue import bp, load_routes

    load_routes()
    app.register_blueprint(bp)
    from crowdpower.revenue import views

    csrf.exempt(views.api_revenue)


@hookimpl
def crowdpower_periodic_jobs():
    from flask import current_app

    every = int(current_app.config.get("REVENUE_SNAPSHOT_INTERVAL") or 3600)
    return [("crowdpower.revenue.snapshot.snapshot_all", every, "default")]
