"""What the Integrations card adds to the status: the last successful sync, webhook
health (last event received, failures in the last 24 hours, Retry), and the sync's phases
as steps."""

from __future__ import annotations

from datetime import timedelta

from flask import flash, redirect, url_for
from sqlalchemy import func, select

from crowdpower.plugins.stripe.blueprint import bp
from crowdpower.plugins.stripe.models import StripeSyncRun, StripeWebhookEvent
from crowdpower.plugins.stripe.status import iso
from crowdpower.plugins.stripe.sync import PHASES
from crowdpower.plugins.stripe.webhooks import request_drain
from crowdpower.services import db, project_required, project_scope, utcnow

PHASE_LABELS = {"customers": "Customers", "products": "Products", "prices": "Prices",
                "subscriptions": "Subscriptions", "charges": "Charges",
                "disputes": "Disputes", "traits": "Traits"}


def last_success(project_id: int) -> dict | None:
    with project_scope(project_id):
        run = db.session.scalar(select(StripeSyncRun).where(
            StripeSyncRun.project_id == project_id, StripeSyncRun.state == "succeeded")
            .order_by(StripeSyncRun.id.desc()).limit(1))
    if run is None:
        return None
    counts = run.counts or {}
    return {"finished_at": iso(run.finished_at),
            "customers": counts.get("customers", 0),
            "subscriptions": counts.get("subscriptions", 0),
            "charges": counts.get("charges", 0)}


def webhook_health(project_id: int) -> dict:
    """Last event received, and events that failed for good in the last 24 hours."""
    since = utcnow() - timedelta(hours=24)
    events = StripeWebhookEvent
    last = db.session.scalar(select(func.max(events.received_at)).where(
        events.project_id == project_id))
    failed = db.session.scalar(select(func.count()).select_from(events).where(
        events.project_id == project_id, events.status == "failed",
        events.received_at >= since)) or 0
    error = db.session.scalar(select(events.error).where(
        events.project_id == project_id, events.status == "failed",
        events.received_at >= since).order_by(events.id.desc()).limit(1)) if failed else None
    return {"last_received_at": iso(last), "failed_24h": failed, "last_error": error}


def card_details(project_id: int) -> dict:
    return {"last_success": last_success(project_id),
            "webhooks": webhook_health(project_id),
            "phases": [{"key": p, "label": PHASE_LABELS.get(p, p)} for p in PHASES]}


@bp.app_context_processor
def _card_helpers() -> dict:
    return {"stripe_card_details": card_details}


@bp.post("/projects/<int:project_id>/integrations/stripe/webhooks/retry")
@project_required
def retry_webhooks(project_id: int):
    """Put this project's failed webhook events back in the inbox and drain it."""
    events = StripeWebhookEvent
    result = db.session.execute(events.__table__.update().where(
        events.project_id == project_id, events.status == "failed").values(
        status="pending", attempts=0, error=None))
    db.session.commit()
    if result.rowcount:
        request_drain(project_id)
        flash(f"Retrying {result.rowcount} failed Stripe event"
              f"{'' if result.rowcount == 1 else 's'}.")
    else:
        flash("No failed Stripe events to retry.", "warning")
    return redirect(url_for("web.integrations", project_id=project_id))
