"""The automations feature's hook implementations (an internal plugin of the host)."""

from __future__ import annotations

import logging

from crowdpower.automations import (
    api,
    attribution,
    bp,
    load_routes,
    models,  # noqa: F401  (tables exist for create_all/Alembic)
    views,
)
from crowdpower.automations.engine import hold_dispatches, on_event
from crowdpower.automations.views import customer_panel
from crowdpower.extensions import csrf
from crowdpower.jobs import after_commit
from crowdpower.plugins import hookimpl

log = logging.getLogger(__name__)

CONFIG_DEFAULTS = {
    "SMTP_TIMEOUT": 30,
    "WEBHOOK_TIMEOUT": 10,
    # Networks/host names webhooks may reach although internal (on-premise installs).
    "OUTBOUND_ALLOWED_PORTS": [80, 443, 8080, 8443],
    # Seconds before retry 1, 2, 3 of a transient SMTP/webhook failure; then it fails.
    "MESSAGE_RETRY_DELAYS": [60, 300, 1800],
    # A message "sending" for longer than this had its worker die; the sweep retries it.
    "MESSAGE_CLAIM_TTL": 600,
    "MESSAGE_SWEEP_AFTER": 600,
    # Events that happened longer ago than this (imports, backfills) start no automation;
    # longer than the days a sender typically retries its webhooks (3).
    "AUTOMATION_MAX_EVENT_AGE": 4 * 24 * 3600,
    # A batch of at most this many recorded events that start automations is dispatched
    # in the job that recorded it, right after its commit (0: always a queued job): a
    # queued dispatch waits for a free worker behind whole drains.
    "AUTOMATION_INLINE_DISPATCH": 20,
    # A dispatch job queued this many seconds ago and not run yet (lost with a stopped
    # worker or a Redis failover, or stuck behind a backlog) is queued again by the sweep.
    "AUTOMATION_DISPATCH_SWEEP_AFTER": 300,
}


@hookimpl
def crowdpower_config_defaults():
    return CONFIG_DEFAULTS


@hookimpl
def crowdpower_event_recorded(project_id, event_id):
    """After commit: must not raise, or other plugins' implementations would not run."""
    try:
        on_event(project_id, event_id)
    except Exception:
        log.exception("automations: could not handle event %s of project %s",
                      event_id, project_id)
    try:  # a conversion (e.g. a recovered payment) credited to the last message
        attribution.on_event(project_id, event_id)
    except Exception:
        log.exception("automations: could not attribute event %s of project %s",
                      event_id, project_id)


@hookimpl
def crowdpower_events_recording(project_id, event_ids):
    """A batch (``record_events``), in its transaction: the dispatches it owes are noted
    with the events and queued after commit (one job); attribution after commit."""
    hold_dispatches(project_id, event_ids)
    after_commit(lambda: _attribute_batch(project_id, event_ids))


def _attribute_batch(project_id: int, event_ids: list[int]) -> None:
    try:
        attribution.on_events(project_id, event_ids)
    except Exception:
        log.exception("automations: could not attribute %d events of project %s",
                      len(event_ids), project_id)


@hookimpl
def crowdpower_register_blueprints(app):
    load_routes()
    app.register_blueprint(bp)
    for view in [*api.VIEWS, views.unsubscribe]:
        csrf.exempt(view)


@hookimpl
def crowdpower_customer_panels(project_id, customer_id):
    return customer_panel(project_id, customer_id)


@hookimpl
def crowdpower_queues():
    # Dispatching an event (which automations it starts) is small and comes from events
    # already applied: served first, so a busy inbox cannot starve it; sends come after
    # the plugins' inboxes.
    return [("automations.dispatch", 5), ("messages", 20)]


@hookimpl
def crowdpower_periodic_jobs():
    return [("crowdpower.automations.delivery.sweep", 60, "messages"),
            ("crowdpower.automations.engine.sweep_dispatches", 30,
             "automations.dispatch")]
