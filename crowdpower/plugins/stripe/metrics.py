"""The Stripe plugin's metrics, declared to the host through ``crowdpower_metrics``.

Counters are bumped where things happen (the webhook endpoint, the inbox drain, the
sync, the API client); the inbox and sync gauges are measured from their tables when
``/metrics`` is scraped. Labels are outcomes, states, event types (Stripe's catalogue)
and object kinds; a project appears only in the top-N backlog gauge.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from crowdpower.services import metric_counter as counter

WEBHOOK_ACKS = counter("crowdpower_stripe_webhook_acks",
                       "Webhook deliveries answered, by outcome (accepted, duplicate, "
                       "ignored, rejected, too_large, unavailable).", ["outcome"])
EVENTS_APPLIED = counter("crowdpower_stripe_events_applied",
                         "Inbox events handled, by Stripe event type and resulting status "
                         "(processed, ignored, duplicate, retry, failed).", ["type", "status"])
SYNC_RUNS = counter("crowdpower_stripe_sync_runs",
                    "Sync runs that ended, by outcome (succeeded, failed).", ["outcome"])
SYNC_OBJECTS = counter("crowdpower_stripe_sync_objects",
                       "Objects fetched from Stripe and written by syncs, by kind.", ["kind"])
API_CALLS = counter("crowdpower_stripe_api_calls",
                    "Requests to Stripe's API for connected accounts, by outcome "
                    "(ok, rate_limited = HTTP 429, error).", ["outcome"])
API_RETRIES = counter("crowdpower_stripe_api_retries",
                      "Stripe API requests sent again by a sync after a transient failure "
                      "or a 429.", ["reason"])

INSTRUMENTS = [WEBHOOK_ACKS, EVENTS_APPLIED, SYNC_RUNS, SYNC_OBJECTS, API_CALLS, API_RETRIES]


def ack_outcome(status: int, body: dict) -> str:
    """The outcome label of a webhook reply (pure)."""
    if status == 200:
        return "duplicate" if body.get("duplicate") else \
            "ignored" if body.get("ignored") else "accepted"
    return {413: "too_large", 503: "unavailable"}.get(status, "rejected")


def inbox_gauges() -> Iterable[Any]:
    """Inbox rows by status, the age of the oldest pending row, the top-N projects'
    backlogs, and sync runs by state: three grouped queries on indexed columns."""
    from prometheus_client.core import GaugeMetricFamily
    from sqlalchemy import func, select

    from crowdpower.plugins.stripe.models import StripeSyncRun, StripeWebhookEvent
    from crowdpower.services import db, setting, unscoped, utcnow

    inbox = StripeWebhookEvent
    with unscoped():
        by_status = db.session.execute(select(inbox.status, func.count())
                                       .group_by(inbox.status)).all()
        oldest = db.session.scalar(select(func.min(inbox.received_at)).where(
            inbox.status.in_(("pending", "retry"))))
        top = int(setting("METRICS_TOP_PROJECTS") or 0)
        backlog = db.session.execute(
            select(inbox.project_id, func.count()).where(
                inbox.status.in_(("pending", "retry")), inbox.project_id.is_not(None))
            .group_by(inbox.project_id).order_by(func.count().desc()).limit(top)
        ).all() if top else []
        syncs = db.session.execute(select(StripeSyncRun.state, func.count())
                                   .group_by(StripeSyncRun.state)).all()
    db.session.commit()
    rows = GaugeMetricFamily("crowdpower_stripe_inbox_rows",
                             "Webhook inbox rows by status.", labels=["status"])
    for status in ("pending", "retry", "processed", "ignored", "duplicate", "failed"):
        rows.add_metric([status], dict(by_status).get(status, 0))
    age = GaugeMetricFamily("crowdpower_stripe_inbox_oldest_pending_age_seconds",
                            "Age of the oldest pending or retrying inbox row (0: none).")
    if oldest is not None:
        if oldest.tzinfo is None:
            from datetime import UTC

            oldest = oldest.replace(tzinfo=UTC)
        now = utcnow()
        now = now if now.tzinfo else now.replace(tzinfo=oldest.tzinfo)
        age.add_metric([], max(0.0, (now - oldest).total_seconds()))
    else:
        age.add_metric([], 0.0)
    per_project = GaugeMetricFamily(
        "crowdpower_stripe_inbox_backlog_top_projects",
        "Pending/retrying inbox rows of the METRICS_TOP_PROJECTS largest backlogs.",
        labels=["project"])
    for project_id, count in backlog:
        per_project.add_metric([str(project_id)], count)
    runs = GaugeMetricFamily("crowdpower_stripe_sync_runs_by_state",
                             "Sync runs stored, by state.", labels=["state"])
    for state in ("pending", "running", "succeeded", "failed"):
        runs.add_metric([state], dict(syncs).get(state, 0))
    return [rows, age, per_project, runs]
