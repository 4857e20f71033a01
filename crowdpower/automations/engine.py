"""Which automations an event starts, and the checks made at trigger time and at send time.

The event hook runs after the recording transaction committed, inside the request or
job that recorded it, so it only asks "does any enabled automation of this project
listen for this event name?" (one indexed query) and, if so, enqueues ``dispatch_event``
on the ``messages`` queue. That job evaluates the conditions and inserts one message
row per (automation, event) — a unique pair, so a hook fired twice creates one row —
and enqueues the send job with the automation's delay.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import and_, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from crowdpower import jobs, rules
from crowdpower.automations.models import (
    Automation,
    AutomationSettings,
    Message,
    PendingDispatch,
)
from crowdpower.extensions import db
from crowdpower.models import Customer, Event, Segment, utcnow
from crowdpower.segments import condition as segment_condition
from crowdpower.tenancy import current_project_id, get_by_id_and_project, unscoped

log = logging.getLogger(__name__)
QUEUE = "messages"
DISPATCH_QUEUE = "automations.dispatch"


def on_event(project_id: int, event_id: int) -> bool:
    """Enqueue ``dispatch_event`` if an enabled automation listens for this event's name.

    Uses its own connection: the caller's session has just committed and emits no SQL.
    """
    stmt = (select(Automation.id)
            .join(Event, and_(Event.project_id == Automation.project_id,
                              Event.name == Automation.trigger))
            .where(Event.id == event_id, Event.project_id == project_id,
                   Automation.project_id == project_id, Automation.enabled.is_(True))
            .limit(1))
    with db.engine.connect() as conn:
        if conn.scalar(stmt) is None:
            return False
    # Deciding who gets a message is as urgent as recording the event: it shares the
    # webhooks queue, so a backlog of webhooks cannot starve it (sends stay on ``messages``).
    if current_app.config["AUTOMATION_INLINE_DISPATCH"] and jobs.run_inline(
            dispatch_event, event_id, queue=DISPATCH_QUEUE, project_id=project_id):
        return True  # recorded by a job: dispatched in it, as ``_queue_held`` does
    try:
        jobs.enqueue(dispatch_event, event_id, queue=DISPATCH_QUEUE, project_id=project_id)
    except Exception:  # the queue is down: keep the event for ``sweep_dispatches``
        log.exception("dispatch of event %s not queued; recorded for the sweeper", event_id)
        _record_pending(project_id, event_id)
    return True


def hold_dispatches(project_id: int, event_ids: list[int]) -> list[int]:
    """For a batch of events, in the transaction recording them: note the events some
    enabled automation listens for (``PendingDispatch`` rows, one statement, committed
    with the events), and once committed queue one ``dispatch_events`` job for them and
    clear the notes. A crash between the commit and the queueing leaves the notes for
    ``sweep_dispatches``, so no dispatch is lost; a repeat is harmless (one message per
    automation and event). Returns the events noted."""
    if not event_ids:
        return []
    stmt = (select(Event.id).distinct()
            .join(Automation, and_(Automation.project_id == Event.project_id,
                                   Automation.trigger == Event.name))
            .where(Event.project_id == project_id, Event.id.in_(event_ids),
                   Automation.project_id == project_id, Automation.enabled.is_(True)))
    wanted = sorted(db.session.scalars(stmt))
    if not wanted:
        return []
    insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
    now = utcnow()
    db.session.execute(insert(PendingDispatch).on_conflict_do_nothing(
        index_elements=["event_id"]), [{"project_id": project_id, "event_id": event_id,
                                        "created_at": now} for event_id in wanted])
    jobs.after_commit(lambda: _queue_held(project_id, wanted))
    return wanted


def _queue_held(project_id: int, event_ids: list[int]) -> None:
    """After the recording commit: dispatch a few events at once, in the job that
    recorded them (``AUTOMATION_INLINE_DISPATCH``; a queued job would wait for a free
    worker, most of the webhook → message latency), or queue one job for a batch (a
    month-end burst is not thousands of queued jobs, and other workers share it)."""
    inline = len(event_ids) <= int(current_app.config["AUTOMATION_INLINE_DISPATCH"])
    if not (inline and jobs.run_inline(dispatch_events, event_ids, queue=DISPATCH_QUEUE,
                                       project_id=project_id)):
        try:
            jobs.enqueue(dispatch_events, event_ids, queue=DISPATCH_QUEUE,
                         project_id=project_id)
        except Exception:  # the queue is down: the notes stay for ``sweep_dispatches``
            log.exception("dispatch of %d events not queued; left for the sweeper",
                          len(event_ids))
            return
    try:
        with db.engine.begin() as conn:
            conn.execute(delete(PendingDispatch).where(
                PendingDispatch.project_id == project_id,
                PendingDispatch.event_id.in_(event_ids)))
    except Exception:  # the sweeper queues them again: harmless
        log.exception("dispatch notes of %d events not cleared", len(event_ids))


def dispatch_events(event_ids: list[int]) -> list[int]:
    """Job: ``dispatch_event`` for each of a batch's events (idempotent, as it is)."""
    return [m for event_id in event_ids for m in dispatch_event(event_id)]


def _record_pending(project_id: int, event_id: int) -> None:
    insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
    with db.engine.begin() as conn:
        conn.execute(insert(PendingDispatch).values(
            project_id=project_id, event_id=event_id, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["event_id"]))


def sweep_dispatches(limit: int = 1000) -> int:
    """Periodic job: queue the dispatches that could not be queued when their event was
    recorded. A row is deleted only once its job is queued; ``dispatch_event`` is
    idempotent (one message per automation and event), so a repeat is harmless."""
    with unscoped():  # a maintenance job across every project, by design
        rows = db.session.execute(select(PendingDispatch.id, PendingDispatch.project_id,
                                         PendingDispatch.event_id)
                                  .order_by(PendingDispatch.id).limit(limit)).all()
    done = []
    for row_id, project_id, event_id in rows:
        jobs.enqueue(dispatch_event, event_id, queue=DISPATCH_QUEUE, project_id=project_id)
        done.append(row_id)
    if done:
        with unscoped():
            db.session.execute(delete(PendingDispatch).where(PendingDispatch.id.in_(done)))
        db.session.commit()
    return len(done)


def dispatch_event(event_id: int) -> list[int]:
    """Job: create the messages this event triggers and enqueue their sends; returns new ids.

    Events older than ``AUTOMATION_MAX_EVENT_AGE`` seconds (a backfill or import) start
    nothing: nobody wants a dunning email for last year's failed charge.
    """
    project_id = current_project_id()
    assert project_id is not None, "dispatch_event runs in a project's scope"
    event = get_by_id_and_project(Event, event_id, project_id)
    if event is None:
        return []
    max_age = current_app.config.get("AUTOMATION_MAX_EVENT_AGE")
    if max_age and event.occurred_at < utcnow() - timedelta(seconds=max_age):
        log.info("event %s is older than %ss: automations not run", event_id, max_age)
        return []
    automations = db.session.scalars(
        select(Automation).where(Automation.project_id == project_id,
                                 Automation.trigger == event.name,
                                 Automation.enabled.is_(True)).order_by(Automation.id))
    created = []
    for automation in automations:
        if audience_reason(automation, event) is not None:
            continue
        message_id = insert_message(automation, event)
        if message_id is None:  # this (automation, event) already has its message
            continue
        created.append(message_id)
        _enqueue_send(project_id, message_id, automation.delay_seconds)
    return created


def _enqueue_send(project_id: int, message_id: int, delay: float) -> None:
    from crowdpower.automations.delivery import enqueue_send  # a cycle: delivery imports us

    jobs.after_commit(lambda: enqueue_send(project_id, message_id, delay))


def insert_message(automation: Automation, event: Event) -> int | None:
    """Insert the (automation, event) message unless it exists; its id, or None."""
    insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
    now = utcnow()
    stmt = (insert(Message)
            .values(project_id=automation.project_id, automation_id=automation.id,
                    event_id=event.id, customer_id=event.customer_id,
                    channel=automation.action, state="queued",
                    send_after=now + timedelta(seconds=automation.delay_seconds or 0))
            .on_conflict_do_nothing(index_elements=["automation_id", "event_id"])
            .returning(Message.id))
    return db.session.execute(stmt).scalar()


def audience_reason(automation: Automation, event: Event) -> str | None:
    """Why this event's customer is not in the automation's audience, or None if they are."""
    conditions = automation.conditions or {}
    project_id = automation.project_id
    try:
        if conditions.get("event") and not rules.evaluate(conditions["event"],
                                                          event.properties or {}):
            return "event conditions not met"
        if conditions.get("traits") and not _customer_where(
                project_id, event.customer_id, rules.compile_rule(conditions["traits"],
                                                                  project_id)):
            return "trait conditions not met"
    except rules.RuleError as exc:
        return f"invalid condition: {exc}"
    if automation.segment_id is not None:
        segment = get_by_id_and_project(Segment, automation.segment_id, project_id)
        if segment is None:
            return f"segment #{automation.segment_id} no longer exists"
        if not _customer_where(project_id, event.customer_id, segment_condition(segment)):
            return f"customer not in segment {segment.name!r}"
    return None


def _customer_where(project_id: int, customer_id: int, condition) -> bool:
    return db.session.scalar(select(Customer.id).where(
        Customer.project_id == project_id, Customer.id == customer_id, condition)) is not None


def frequency_cap_hours(project_id: int) -> int | None:
    return db.session.scalar(select(AutomationSettings.frequency_cap_hours).where(
        AutomationSettings.project_id == project_id))


def send_time_reason(message: Message, automation: Automation | None, event: Event | None,
                     customer: Customer | None) -> str | None:
    """Why a claimed message must not go out now (recorded as ``skipped``), or None.

    Re-checks everything that may have changed since the trigger: the automation
    still enabled, the conditions and segment, suppression and the frequency cap.
    """
    if automation is None or event is None or customer is None:
        return "automation, event or customer no longer exists"
    if not automation.enabled:
        return "automation disabled"
    if automation.action != message.channel:
        return f"automation now sends by {automation.action}, not {message.channel}"
    reason = audience_reason(automation, event)
    if reason:
        return f"{reason} at send time"
    if message.channel != "email":
        return None
    if not customer.email:
        return "customer has no email address"
    if customer.unsubscribed_at is not None:
        return "customer unsubscribed"
    hours = frequency_cap_hours(message.project_id)
    if hours:
        since = utcnow() - timedelta(hours=hours)
        recent = db.session.scalar(select(func.count(Message.id)).where(
            Message.project_id == message.project_id, Message.customer_id == customer.id,
            Message.channel == "email", Message.id != message.id,
            Message.state.in_(("sending", "sent", "outbox")), Message.claimed_at >= since))
        if recent:
            return f"frequency cap: this customer was emailed in the past {hours} h"
    return None
