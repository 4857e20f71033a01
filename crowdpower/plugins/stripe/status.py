"""The integration's status, shown on the card and served by the API."""

from __future__ import annotations

from sqlalchemy import select

from crowdpower import services
from crowdpower.plugins.stripe.connection import connection
from crowdpower.plugins.stripe.models import StripeSyncRun
from crowdpower.services import db, project_scope

iso = services.iso  # the name sync_json's callers used


def latest_sync(project_id: int) -> StripeSyncRun | None:
    with project_scope(project_id):
        return db.session.scalar(select(StripeSyncRun).where(
            StripeSyncRun.project_id == project_id).order_by(StripeSyncRun.id.desc()).limit(1))


connection_for = connection  # the name other modules and tests used


def sync_json(run: StripeSyncRun | None) -> dict | None:
    if run is None:
        return None
    return {"id": run.id, "state": run.state, "phase": run.phase, "reason": run.reason,
            "customers_processed": run.customers_processed,
            "customers_total": run.customers_total, "counts": run.counts or {},
            "api_calls": run.api_calls, "started_at": iso(run.started_at),
            "finished_at": iso(run.finished_at), "error": run.error}


def integration_status(project_id: int) -> dict:
    """``{"status", "account_id", "livemode", "sync"}`` as in CONTRACT.md."""
    conn = connection_for(project_id)
    state = conn.status if conn else "disconnected"
    # CONTRACT.md's statuses: a refused refresh token ("reconnect needed") is an error.
    status = "error" if state == "reconnect_needed" else state
    return {
        "status": status,
        "reconnect_needed": state == "reconnect_needed",
        "connection": (conn.kind or "connect") if conn and state != "disconnected" else None,
        "account_id": conn.stripe_user_id if conn and status != "disconnected" else None,
        "livemode": bool(conn.livemode) if conn else None,
        "accept_test_data": bool(conn.accept_test_data) if conn else False,
        "label": conn.label if conn and status != "disconnected" else None,
        "connected_at": iso(conn.connected_at) if conn else None,
        "last_error": conn.last_error if conn else None,
        "sync": sync_json(latest_sync(project_id)),
    }
