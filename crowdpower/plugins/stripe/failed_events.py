"""The failed-events page the card's webhook health links to: a project's webhook events
that failed for good or are still being retried, newest first, each with its error in
words and a Retry; and Retry all. Retrying goes through ``inbox.retry_events``, the one
mechanism the card's Retry and ``crowdpower ops events retry`` use too."""

from __future__ import annotations

import re
from datetime import timedelta

from flask import abort, flash, redirect, render_template, request, url_for
from sqlalchemy import func, select

from crowdpower.plugins.stripe.blueprint import bp
from crowdpower.plugins.stripe.inbox import MAX_ATTEMPTS, RETRYABLE, retry_events
from crowdpower.plugins.stripe.models import StripeWebhookEvent
from crowdpower.plugins.stripe.profile import DASHBOARD
from crowdpower.services import db, iso, project_required, project_scope, utcnow

PER_PAGE = 25
WINDOWS = {"24h": timedelta(hours=24), "all": None}
STATUS_WORDS = {"failed": "failed", "retry": "retrying", "pending": "waiting to be applied",
                "processed": "applied", "ignored": "ignored", "duplicate": "duplicate"}

# What an exception class (the stored error starts with its name) means to a tenant.
ERROR_WORDS = {
    "APIConnectionError": "Stripe could not be reached.",
    "APIError": "Stripe answered with a server error.",
    "RateLimitError": "Stripe asked us to slow down.",
    "AuthenticationError": "Stripe refused CrowdPower's access: reconnecting may be needed.",
    "PermissionError": "Stripe did not let CrowdPower read this object.",
    "InvalidRequestError": "Stripe refused the request (the object may be gone).",
    "IdempotencyError": "Stripe refused a repeated request.",
    "ReconnectNeeded": "The Stripe connection must be reconnected.",
    "TokenEndpointError": "Stripe would not renew CrowdPower's access token.",
    "OperationalError": "CrowdPower's database was unavailable.",
    "Timeout": "Stripe took too long to answer.",
}
_RETRIED = re.compile(r"^retried by [^:]+ after: ")


def error_in_words(error: str | None) -> dict[str, str | None]:
    """A stored error (``"APIError: Request req_1: …"``, maybe behind "retried by …
    after: " notes) → ``{"words": a sentence, "detail": what the exception said}``."""
    text = (error or "").strip()
    while _RETRIED.match(text):
        text = _RETRIED.sub("", text, count=1).strip()
    if not text:
        return {"words": "No error was recorded.", "detail": None}
    name, _sep, detail = text.partition(": ")
    name = name.rsplit(".", 1)[-1]
    if not _sep or not re.fullmatch(r"[A-Za-z_]\w*", name):
        return {"words": "Applying the event failed.", "detail": text}
    detail = re.sub(r"^Request req_\w+: ", "", detail).strip() or None
    words = ERROR_WORDS.get(name) or f"Applying the event failed ({name})."
    return {"words": words, "detail": detail}


def event_dashboard_url(event_id: str, livemode: bool) -> str:
    """The event's page in the account's Stripe Dashboard (``/test/`` for test mode)."""
    return f"{DASHBOARD}{'' if livemode else '/test'}/events/{event_id}"


def event_row(row: StripeWebhookEvent) -> dict:
    return {"id": row.id, "event_id": row.event_id, "type": row.type,
            "status": row.status, "status_words": STATUS_WORDS.get(row.status, row.status),
            "received_at": iso(row.received_at), "processed_at": iso(row.processed_at),
            "attempts": row.attempts or 0, "livemode": bool(row.livemode),
            "error": error_in_words(row.error), "raw_error": row.error,
            "retryable": row.status in RETRYABLE,
            "dashboard_url": event_dashboard_url(row.event_id, bool(row.livemode))}


def _failed_query(project_id: int, window: str):
    events = StripeWebhookEvent
    query = select(events).where(events.project_id == project_id,
                                 events.status.in_(RETRYABLE))
    if WINDOWS[window] is not None:
        query = query.where(events.received_at >= utcnow() - WINDOWS[window])
    return query


@bp.get("/projects/<int:project_id>/integrations/stripe/webhooks/failed")
@project_required
def failed_events(project_id: int):
    window = request.args.get("window", "24h")
    if window not in WINDOWS:
        abort(400, description="window must be 24h or all.")
    query = _failed_query(project_id, window)
    with project_scope(project_id):
        total = db.session.scalar(select(func.count()).select_from(query.subquery())) or 0
        pages = max(1, -(-total // PER_PAGE))
        page = min(max(1, request.args.get("page", default=1, type=int)), pages)
        rows = db.session.scalars(query.order_by(StripeWebhookEvent.id.desc())
                                  .offset((page - 1) * PER_PAGE).limit(PER_PAGE)).all()
        total_all = total if window == "all" else db.session.scalar(
            select(func.count()).select_from(_failed_query(project_id, "all").subquery()))
    return render_template("stripe/failed_events.html", events=[event_row(r) for r in rows],
                           total=total, total_all=total_all, older=total_all - total,
                           page=page, pages=pages, window=window, per_page=PER_PAGE,
                           max_attempts=MAX_ATTEMPTS)


def _event_or_404(project_id: int, event_id: str) -> StripeWebhookEvent:
    with project_scope(project_id):
        row = db.session.scalar(select(StripeWebhookEvent).where(
            StripeWebhookEvent.project_id == project_id,
            StripeWebhookEvent.event_id == event_id))
    if row is None:
        abort(404)
    return row


@bp.get("/projects/<int:project_id>/integrations/stripe/webhooks/events/<event_id>")
@project_required
def webhook_event(project_id: int, event_id: str):
    row = _event_or_404(project_id, event_id)
    return render_template("stripe/webhook_event.html", event=event_row(row))


def _back(project_id: int, event_id: str | None = None):
    """Where a Retry returns: the page it was pressed on (a fixed choice, never a URL)."""
    back = request.form.get("back")
    if back == "failed":
        window = request.form.get("window")
        return redirect(url_for("stripe.failed_events", project_id=project_id,
                                window=window if window in WINDOWS else None))
    if back == "event" and event_id:
        return redirect(url_for("stripe.webhook_event", project_id=project_id,
                                event_id=event_id))
    return redirect(url_for("web.integrations", project_id=project_id))


@bp.post("/projects/<int:project_id>/integrations/stripe/webhooks/events/<event_id>/retry")
@project_required
def retry_webhook_event(project_id: int, event_id: str):
    """Apply one failed (or retrying) event again, now."""
    row = _event_or_404(project_id, event_id)
    if row.status not in RETRYABLE:
        flash(f"Stripe event {event_id} is not failed ({row.status}): nothing to retry.",
              "warning")
        return _back(project_id, event_id)
    done = retry_events(project_id, event_ids=[event_id])
    flash(f"Retrying Stripe event {event_id}." if done
          else f"Stripe event {event_id} changed meanwhile: nothing to retry.",
          "message" if done else "warning")
    return _back(project_id, event_id)


@bp.post("/projects/<int:project_id>/integrations/stripe/webhooks/retry")
@project_required
def retry_webhooks(project_id: int):
    """Apply every failed (or retrying) event of this project again, now."""
    done = retry_events(project_id)
    if done:
        flash(f"Retrying {len(done)} Stripe event{'' if len(done) == 1 else 's'}.")
    else:
        flash("No failed Stripe events to retry.", "warning")
    return _back(project_id)
