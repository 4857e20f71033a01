"""The Stripe plugin's operator commands (``crowdpower ops events|sync …``) and its part
of ``crowdpower ops status``: inbox backlog per project, running and failed syncs."""

from __future__ import annotations

from typing import Any

import click
from flask.cli import AppGroup
from sqlalchemy import func, select

from crowdpower.plugins.stripe.models import StripeSyncRun, StripeWebhookEvent
from crowdpower.services import db, project_scope, unscoped, utcnow
from crowdpower.services import ops_audit as audit
from crowdpower.services import ops_echo as echo
from crowdpower.services import ops_project_option as project_option
from crowdpower.services import ops_require_project as _project_exists

ACTIVE = ("pending", "running")


def status(project_id: int | None) -> dict[str, Any]:
    inbox = StripeWebhookEvent
    backlog_q = select(inbox.project_id, inbox.status, func.count(),
                       func.min(inbox.received_at)).where(
        inbox.status.in_(("pending", "retry", "failed")),
        inbox.project_id.is_not(None)).group_by(inbox.project_id, inbox.status)
    runs_q = select(StripeSyncRun).where(StripeSyncRun.state.in_((*ACTIVE, "failed")))
    if project_id is not None:
        backlog_q = backlog_q.where(inbox.project_id == project_id)
        runs_q = runs_q.where(StripeSyncRun.project_id == project_id)
    with unscoped():
        backlog = db.session.execute(backlog_q).all()
        runs = db.session.scalars(runs_q.order_by(StripeSyncRun.id.desc()).limit(200)).all()
        latest: dict[int, StripeSyncRun] = {}
        for run in runs:  # failed runs that a later run replaced are history, not trouble
            latest.setdefault(run.project_id, run)
        newest = dict(db.session.execute(select(StripeSyncRun.project_id,
                                                func.max(StripeSyncRun.id))
                                         .group_by(StripeSyncRun.project_id)).all())
    inbox_out: dict[str, dict[str, Any]] = {}
    for pid, state, count, oldest in backlog:
        entry = inbox_out.setdefault(str(pid), {})
        entry[state] = count
        if state in ("pending", "retry"):
            entry["oldest_received_at"] = min(filter(None, [entry.get("oldest_received_at"),
                                                            oldest]))
    syncs = [{"project_id": r.project_id, "id": r.id, "state": r.state, "phase": r.phase,
              "error": r.error, "started_at": r.started_at, "heartbeat_at": r.heartbeat_at}
             for r in latest.values() if newest.get(r.project_id) == r.id]
    return {"stripe": {"inbox": inbox_out,
                       "syncs_running": [s for s in syncs if s["state"] in ACTIVE],
                       "syncs_failed": [s for s in syncs if s["state"] == "failed"]}}


events = AppGroup("events", help="A project's Stripe webhook events (the inbox).")


@events.command("list")
@project_option
@click.option("--status", "state", default="failed", show_default=True,
              type=click.Choice(["failed", "retry", "pending", "processed", "ignored",
                                 "duplicate"]))
@click.option("--limit", type=int, default=50)
def events_list(project_id: int, state: str, limit: int) -> None:
    """A project's inbox rows in one status, newest first (no payloads)."""
    _project_exists(project_id)
    with project_scope(project_id):
        rows = db.session.scalars(select(StripeWebhookEvent).where(
            StripeWebhookEvent.project_id == project_id, StripeWebhookEvent.status == state)
            .order_by(StripeWebhookEvent.id.desc()).limit(limit)).all()
        echo([{"id": r.id, "event_id": r.event_id, "type": r.type, "status": r.status,
               "attempts": r.attempts, "error": r.error, "received_at": r.received_at}
              for r in rows])


@events.command("retry")
@project_option
@click.option("--id", "ids", type=int, multiple=True,
              help="Only these inbox rows (default: every failed one of the project).")
def events_retry(project_id: int, ids: tuple[int, ...]) -> None:
    """Apply a project's failed events again: back to pending, attempts start over, and a
    drain of the project's inbox is queued (the normal path, oldest first)."""
    from crowdpower.plugins.stripe.inbox import retry_events

    _project_exists(project_id)
    done = retry_events(project_id, ids=ids or None, states=("failed",), by="operator")
    audit("stripe.events.retry", project_id, rows=[i for i, _e in done],
          events=[e for _i, e in done])
    echo({"retried": [{"id": i, "event_id": e} for i, e in done]})


sync = AppGroup("sync", help="A project's Stripe sync.")


@sync.command("resume")
@project_option
def sync_resume(project_id: int) -> None:
    """Start a sync (from the last failed run's checkpoint), or re-enqueue a stalled one."""
    from crowdpower.plugins.stripe.sync import request_sync

    _project_exists(project_id)
    run, started = request_sync(project_id, reason="operator")
    db.session.commit()
    audit("stripe.sync.resume", project_id, run=run.id, started=started)
    echo({"run": run.id, "started": started, "state": run.state,
          "resumed_from": run.resumed_from_id})


@sync.command("cancel")
@project_option
def sync_cancel(project_id: int) -> None:
    """Stop a project's pending or running sync: marked failed (its checkpoint kept, so
    ``resume`` continues from it); a slice in flight stops at its next checkpoint."""
    _project_exists(project_id)
    with project_scope(project_id):
        runs = db.session.scalars(select(StripeSyncRun).where(
            StripeSyncRun.project_id == project_id, StripeSyncRun.state.in_(ACTIVE))).all()
        for run in runs:
            run.state, run.error, run.finished_at = ("failed", "Cancelled by an operator.",
                                                     utcnow())
        cancelled = [r.id for r in runs]
        db.session.commit()
    audit("stripe.sync.cancel", project_id, runs=cancelled)
    echo({"cancelled": cancelled})


COMMANDS = [events, sync]
