"""Which automations an event starts, and the checks made at trigger time and at send time.

The event hook runs after the recording transaction committed, inside the request or
job that recorded it, so it only asks "does any enabled automation of this project
listen for this event name?" (one indexed query) and, if so, notes the event
(``PendingDispatch``) and runs or queues ``dispatch_events``. That job evaluates the conditions and inserts one message
row per (automation, event) — a unique pair, so a hook fired twice creates one row —
and enqueues the send job with the automation's delay.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import and_, delete, func, select, update
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
    """Dispatch this event if an enabled automation listens for its name: note it
    (``PendingDispatch``), then run or queue ``dispatch_events``, which deletes the note
    once it has run, so a lost job is queued again by ``sweep_dispatches``.

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
    _record_pending(project_id, event_id)
    _queue_held(project_id, [event_id])
    return True


def hold_dispatches(project_id: int, event_ids: list[int]) -> list[int]:
    """For a batch of events, in the transaction recording them: note the events some
    enabled automation listens for (``PendingDispatch`` rows, one statement, committed
    with the events), and once committed run or queue one ``dispatch_events`` job for
    them. The job deletes the notes when it has run; until then ``sweep_dispatches``
    queues an overdue note again, so a crash before the queueing or a job lost after it
    loses no dispatch. A repeat is harmless (one message per automation and event).
    Returns the events noted."""
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
    now = utcnow()
    db.session.execute(_insert().on_conflict_do_nothing(index_elements=["event_id"]),
                       [{"project_id": project_id, "event_id": event_id, "created_at": now,
                         "queued_at": now} for event_id in wanted])
    jobs.after_commit(lambda: _queue_held(project_id, wanted))
    return wanted


def _insert():
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(PendingDispatch)


def _queue_held(project_id: int, event_ids: list[int]) -> None:
    """After the recording commit: dispatch a few events at once, in the job that
    recorded them (``AUTOMATION_INLINE_DISPATCH``; a queued job would wait for a free
    worker, most of the webhook → message latency), or queue one job for a batch (a
    month-end burst is not thousands of queued jobs, and other workers share it).
    The notes stay until the job has run (``dispatch_events`` deletes them)."""
    inline = len(event_ids) <= int(current_app.config["AUTOMATION_INLINE_DISPATCH"])
    if inline and jobs.run_inline(dispatch_events, event_ids, queue=DISPATCH_QUEUE,
                                  project_id=project_id):
        return
    try:
        jobs.enqueue(dispatch_events, event_ids, queue=DISPATCH_QUEUE, project_id=project_id)
    except Exception:  # the queue is down: the notes stay, due at the next sweep
        log.exception("dispatch of %d events not queued; left for the sweeper", len(event_ids))
        try:
            with db.engine.begin() as conn:
                conn.execute(update(PendingDispatch).where(
                    PendingDispatch.project_id == project_id,
                    PendingDispatch.event_id.in_(event_ids)).values(queued_at=None))
        except Exception:  # they are swept once overdue anyway
            log.exception("dispatch notes of %d events not marked unqueued", len(event_ids))


def dispatch_events(event_ids: list[int]) -> list[int]:
    """Job: ``dispatch_event`` for each of a batch's events (idempotent, as it is), then
    delete their notes, in the transaction that creates their messages."""
    project_id = current_project_id()
    assert project_id is not None, "dispatch_events runs in a project's scope"
    created = _dispatch(project_id, event_ids)
    db.session.execute(delete(PendingDispatch).where(
        PendingDispatch.project_id == project_id,
        PendingDispatch.event_id.in_(event_ids)))
    return created


def _record_pending(project_id: int, event_id: int) -> None:
    now = utcnow()
    with db.engine.begin() as conn:
        conn.execute(_insert().values(project_id=project_id, event_id=event_id,
                                      created_at=now, queued_at=now)
                     .on_conflict_do_nothing(index_elements=["event_id"]))


SWEEP_BATCH = 500


def sweep_dispatches(limit: int = 5000) -> int:
    """Periodic job: queue again the dispatches whose job is overdue — not queued at all
    (Redis was down), or queued more than ``AUTOMATION_DISPATCH_SWEEP_AFTER`` seconds ago
    and not run yet (lost, or stuck behind a long backlog). One ``dispatch_events`` job
    per project and ``SWEEP_BATCH`` events. A note stays until its job has run;
    ``dispatch_event`` is idempotent, so a repeat is harmless. Returns the notes queued."""
    now = utcnow()
    due = now - timedelta(seconds=int(current_app.config["AUTOMATION_DISPATCH_SWEEP_AFTER"]))
    with unscoped():  # a maintenance job across every project, by design
        rows = db.session.execute(
            select(PendingDispatch.id, PendingDispatch.project_id, PendingDispatch.event_id)
            .where((PendingDispatch.queued_at.is_(None)) | (PendingDispatch.queued_at <= due))
            .order_by(PendingDispatch.id).limit(limit)).all()
    db.session.rollback()  # no transaction held while queueing
    by_project: dict[int, list[tuple[int, int]]] = {}
    for row_id, project_id, event_id in rows:
        by_project.setdefault(project_id, []).append((row_id, event_id))
    queued = 0
    for project_id, notes in by_project.items():
        for i in range(0, len(notes), SWEEP_BATCH):
            chunk = notes[i:i + SWEEP_BATCH]
            jobs.enqueue(dispatch_events, [event_id for _, event_id in chunk],
                         queue=DISPATCH_QUEUE, project_id=project_id)
            with unscoped():
                db.session.execute(update(PendingDispatch)
                                   .where(PendingDispatch.id.in_([r for r, _ in chunk]))
                                   .values(queued_at=now))
            db.session.commit()
            queued += len(chunk)
    return queued


def dispatch_event(event_id: int) -> list[int]:
    """Job: create the messages this event triggers and enqueue their sends; returns new ids.

    Events older than ``AUTOMATION_MAX_EVENT_AGE`` seconds (a backfill or import) start
    nothing: nobody wants a dunning email for last year's failed charge.
    """
    project_id = current_project_id()
    assert project_id is not None, "dispatch_event runs in a project's scope"
    return _dispatch(project_id, [event_id])


def _dispatch(project_id: int, event_ids: list[int]) -> list[int]:
    """``dispatch_event`` for each event, in order: the events and the automations their
    names trigger read once (a drain hands over a batch), the audience checked per
    (automation, event), the messages inserted in one statement; their ids, in event
    then automation order."""
    found = {e.id: e for e in db.session.scalars(select(Event).where(
        Event.project_id == project_id, Event.id.in_(event_ids)))}
    events = [found[i] for i in dict.fromkeys(event_ids) if i in found]
    max_age = current_app.config.get("AUTOMATION_MAX_EVENT_AGE")
    if max_age:
        oldest = utcnow() - timedelta(seconds=max_age)
        for event in [e for e in events if e.occurred_at < oldest]:
            log.info("event %s is older than %ss: automations not run", event.id, max_age)
        events = [e for e in events if e.occurred_at >= oldest]
    if not events:
        return []
    triggered: dict[str, list[Automation]] = {}
    for automation in db.session.scalars(
            select(Automation).where(Automation.project_id == project_id,
                                     Automation.trigger.in_(sorted({e.name for e in events})),
                                     Automation.enabled.is_(True)).order_by(Automation.id)):
        triggered.setdefault(automation.trigger, []).append(automation)
    pairs = [(automation, event) for event in events
             for automation in triggered.get(event.name, [])
             if audience_reason(automation, event) is None]
    created = insert_messages(pairs)
    by_id = {automation.id: automation for automation, _e in pairs}
    out = []
    for (automation_id, _event_id), message_id in created.items():
        out.append(message_id)
        _enqueue_send(project_id, message_id, by_id[automation_id].delay_seconds)
    return out


def _enqueue_send(project_id: int, message_id: int, delay: float) -> None:
    from crowdpower.automations.delivery import enqueue_send  # a cycle: delivery imports us

    jobs.after_commit(lambda: enqueue_send(project_id, message_id, delay))


def insert_messages(pairs: list[tuple[Automation, Event]]) -> dict[tuple[int, int], int]:
    """``insert_message`` for each (automation, event) in one statement; ``{(automation
    id, event id): message id}`` of those inserted (a pair that has its message already
    is left out), in the order given."""
    if not pairs:
        return {}
    insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
    now = utcnow()
    stmt = (insert(Message)
            .values([{"project_id": automation.project_id, "automation_id": automation.id,
                      "event_id": event.id, "customer_id": event.customer_id,
                      "channel": automation.action, "state": "queued",
                      "send_after": now + timedelta(seconds=automation.delay_seconds or 0)}
                     for automation, event in pairs])
            .on_conflict_do_nothing(index_elements=["automation_id", "event_id"])
            .returning(Message.id, Message.automation_id, Message.event_id))
    made = {(a, e): m for m, a, e in db.session.execute(stmt)}
    return {key: made[key] for key in ((a.id, e.id) for a, e in pairs) if key in made}


def insert_message(automation: Automation, event: Event) -> int | None:
    """Insert the (automation, event) message unless it exists; its id, or None."""
    return insert_messages([(automation, event)]).get((automation.id, event.id))


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
