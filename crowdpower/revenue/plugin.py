"""The revenue feature's hook implementations (an internal plugin of the host)."""

from __future__ import annotations

from flask import current_app

from crowdpower.extensions import csrf
from crowdpower.plugins import hookimpl
from crowdpower.revenue import (
    bp,
    load_routes,
    models,  # noqa: F401  (tables exist for create_all/Alembic)
    views,
)

CONFIG_DEFAULTS = {
    # Seconds between snapshot runs; each run replaces today's snapshot (idempotent).
    "REVENUE_SNAPSHOT_INTERVAL": 3600,
    # Per-customer snapshot rows older than this are dropped (0: keep all); the daily
    # totals and movements keep the history.
    "REVENUE_SNAPSHOT_RETENTION_DAYS": 400,
}


@hookimpl
def crowdpower_config_defaults():
    return CONFIG_DEFAULTS


@hookimpl
def crowdpower_register_blueprints(app):
    load_routes()
    app.register_blueprint(bp)
    csrf.exempt(views.api_revenue)


@hookimpl
def crowdpower_periodic_jobs():
    every = int(current_app.config.get("REVENUE_SNAPSHOT_INTERVAL") or 3600)
    return [("crowdpower.revenue.snapshot.snapshot_all", every, "default")]
