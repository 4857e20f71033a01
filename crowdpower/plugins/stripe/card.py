"""What the Integrations card adds to the status: the account's name (a label the tenant
gives it: Stripe App tokens cannot read ``/v1/accounts``), a link to its Dashboard, the
last successful sync, webhook health (last event received, failures in the last 24 hours
with a link to them and Retry), and the sync's phases as steps."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app, flash, g, redirect, request, url_for
from sqlalchemy import func, select

from crowdpower.plugins.stripe.blueprint import bp
from crowdpower.plugins.stripe.connection import connection
from crowdpower.plugins.stripe.failed_events import error_in_words
from crowdpower.plugins.stripe.models import StripeSyncRun, StripeWebhookEvent
from crowdpower.plugins.stripe.profile import DASHBOARD
from crowdpower.plugins.stripe.status import iso
from crowdpower.plugins.stripe.sync import PHASES
from crowdpower.services import db, project_required, project_scope, utcnow

LABEL_MAX = 60

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
    """Last event received; events that failed for good in the last 24 hours (with the
    latest error, raw and in words) and events still being retried."""
    since = utcnow() - timedelta(hours=24)
    events = StripeWebhookEvent
    with project_scope(project_id):
        last = db.session.scalar(select(func.max(events.received_at)).where(
            events.project_id == project_id))
        counts = dict(db.session.execute(select(events.status, func.count()).where(
            events.project_id == project_id, events.status.in_(("failed", "retry")),
            events.received_at >= since).group_by(events.status)).all())
        failed = counts.get("failed", 0)
        error = db.session.scalar(select(events.error).where(
            events.project_id == project_id, events.status == "failed",
            events.received_at >= since).order_by(events.id.desc()).limit(1)) \
            if failed else None
    return {"last_received_at": iso(last), "failed_24h": failed,
            "retrying_24h": counts.get("retry", 0), "last_error": error,
            "last_error_words": error_in_words(error)["words"] if error else None}


def account_dashboard_url(livemode: bool) -> str:
    """The connected account's Dashboard home (``/test/`` for a test-mode connection)."""
    return f"{DASHBOARD}{'' if livemode else '/test'}/dashboard"


def clean_label(raw: str | None) -> tuple[str | None, str | None]:
    """A tenant's name for the connection → ``(label or None to clear, error)``:
    whitespace collapsed, at most ``LABEL_MAX`` characters, no control characters."""
    text = " ".join((raw or "").split())
    if any(ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 for ch in (raw or "")
           if ch not in " \t\r\n"):
        return None, "The name cannot contain control characters."
    if len(text) > LABEL_MAX:
        return None, f"The name can be at most {LABEL_MAX} characters (it has {len(text)})."
    return (text or None), None


def card_details(project_id: int) -> dict:
    conn = connection(project_id)
    return {"label": conn.label if conn else None,
            "dashboard_url": account_dashboard_url(bool(conn.livemode)) if conn else None,
            "label_error": g.get("stripe_label_error"),
            "label_value": g.get("stripe_label_value"),
            "last_success": last_success(project_id),
            "webhooks": webhook_health(project_id),
            "phases": [{"key": p, "label": PHASE_LABELS.get(p, p)} for p in PHASES]}


@bp.app_context_processor
def _card_helpers() -> dict:
    return {"stripe_card_details": card_details}


@bp.post("/projects/<int:project_id>/integrations/stripe/label")
@project_required
def label(project_id: int):
    """Name the connection (shown as the account's name: Stripe App tokens cannot read
    the account's own name); an empty name removes it."""
    conn = connection(project_id)
    if conn is None or conn.status == "disconnected":
        flash("Connect Stripe first.", "warning")
        return redirect(url_for("web.integrations", project_id=project_id))
    value, error = clean_label(request.form.get("label"))
    if error:
        g.stripe_label_error, g.stripe_label_value = error, request.form.get("label")
        flash(f"The name was not saved. {error}", "error")
        page = current_app.view_functions["web.integrations"](project_id=project_id)
        return page, 400
    conn.label = value
    db.session.commit()
    flash(f"The Stripe account is now called “{value}”." if value
          else "The Stripe account's name is removed.")
    return redirect(url_for("web.integrations", project_id=project_id))
