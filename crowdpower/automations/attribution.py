"""Last-touch attribution: which automation gets the credit for a conversion event.

When an event is recorded, and it is the conversion event of some automations (the one
an automation names, or for automations naming none, the events plugins declare with
``crowdpower_conversion_events``, e.g. a recovered payment), the customer's latest
message from one of those automations that went out (sent, or kept in the outbox)
before the event and within that automation's window gets the credit, with the
event's amount. One conversion per event (unique), so a redelivered event never
counts twice. Nothing here knows a billing system.
"""

from __future__ import annotations

import logging
from datetime import UTC, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from crowdpower import jobs
from crowdpower.automations.engine import DISPATCH_QUEUE
from crowdpower.automations.models import Automation, Conversion, Message
from crowdpower.extensions import db
from crowdpower.models import Event
from crowdpower.plugins import get_pm
from crowdpower.tenancy import current_project_id, project_scope

log = logging.getLogger(__name__)
DEFAULT_WINDOW_HOURS = 168
MAX_WINDOW_HOURS = 90 * 24
DELIVERED = ("sent", "outbox")
QUEUE = DISPATCH_QUEUE  # as urgent as deciding who gets a message


def default_conversions(project_id: int) -> dict[str, dict]:
    """``{event name: {"amount_property", "currency_property"}}`` plugins declare
    (constant data: hook implementations must not query, this runs after a commit)."""
    found: dict[str, dict] = {}
    for batch in get_pm().hook.crowdpower_conversion_events(project_id=project_id):
        for spec in batch or []:
            if spec.get("name"):
                found[spec["name"]] = spec
    return found


def check(values: dict[str, Any], fail) -> None:
    """Validate ``conversion_event`` / ``attribution_window_hours`` (for ``clean``)."""
    event = values.get("conversion_event")
    if event in ("", None):
        values["conversion_event"] = None
    elif not isinstance(event, str) or len(event.strip()) > 200:
        fail("conversion_event", "an event name of at most 200 characters, or null")
    else:
        values["conversion_event"] = event.strip()
    window = values.get("attribution_window_hours")
    if window is None:
        values["attribution_window_hours"] = DEFAULT_WINDOW_HOURS
    elif isinstance(window, bool) or not isinstance(window, int) \
            or not 1 <= window <= MAX_WINDOW_HOURS:
        fail("attribution_window_hours", f"an integer from 1 to {MAX_WINDOW_HOURS} (90 days)")


def on_event(project_id: int, event_id: int) -> bool:
    """After commit: enqueue ``attribute`` if this event can be some automation's
    conversion (its own connection: the caller's session has just committed)."""
    defaults = sorted(default_conversions(project_id))
    named = Automation.conversion_event == Event.name
    if defaults:
        named = or_(named, and_(Automation.conversion_event.is_(None),
                                Event.name.in_(defaults)))
    stmt = (select(Automation.id).join(Event, Event.project_id == Automation.project_id)
            .where(Event.id == event_id, Event.project_id == project_id,
                   Automation.project_id == project_id, named).limit(1))
    with db.engine.connect() as conn:
        if conn.scalar(stmt) is None:
            return False
    jobs.enqueue(attribute_job, event_id, queue=QUEUE, project_id=project_id)
    return True


def on_events(project_id: int, event_ids: list[int]) -> list[int]:
    """``on_event`` for a batch (one query); returns the ids ``attribute`` was queued for."""
    if not event_ids:
        return []
    defaults = sorted(default_conversions(project_id))
    named = Automation.conversion_event == Event.name
    if defaults:
        named = or_(named, and_(Automation.conversion_event.is_(None),
                                Event.name.in_(defaults)))
    stmt = (select(Event.id).distinct()
            .join(Automation, Event.project_id == Automation.project_id)
            .where(Event.project_id == project_id, Event.id.in_(event_ids),
                   Automation.project_id == project_id, named))
    with db.engine.connect() as conn:
        wanted = sorted(conn.scalars(stmt))
    if wanted:
        jobs.enqueue(attribute_events_job, wanted, queue=QUEUE, project_id=project_id)
    return wanted


def attribute_events_job(event_ids: list[int]) -> list[int]:
    """Job: ``attribute`` for each of a batch's events; the conversions' ids."""
    project_id = current_project_id()
    assert project_id is not None, "attribute_events_job runs in a project's scope"
    return attribute_many(project_id, event_ids)


def attribute_many(project_id: int, event_ids: list[int]) -> list[int]:
    """``attribute`` for each of these events, in order, reading in three queries what
    one event at a time read in three each (a month-end burst hands over hundreds of
    payments at once): the events, the automations they may convert for, and the
    candidate messages of their customers. Conversions are still inserted one by one, in
    order, as ``attribute`` does. Returns the conversions' ids."""
    with project_scope(project_id):
        defaults = default_conversions(project_id)
        found = {e.id: e for e in db.session.scalars(select(Event).where(
            Event.project_id == project_id, Event.id.in_(event_ids)))}
        for event in found.values():
            db.session.expunge(event)  # read once: ``_insert`` commits after each credit
        events = [found[i] for i in event_ids if i in found]
        names = sorted({e.name for e in events})
        if not events:
            return []
        named = Automation.conversion_event.in_(names)
        if defaults:
            named = or_(named, Automation.conversion_event.is_(None))
        automations = db.session.execute(select(
            Automation.id, Automation.conversion_event, Automation.attribution_window_hours)
            .where(Automation.project_id == project_id, named)).all()
        windows: dict[str, dict[int, int | None]] = {
            name: {a: w for a, conversion, w in automations
                   if conversion == name or (conversion is None and name in defaults)}
            for name in names}
        wanted = {a for w in windows.values() for a in w}
        if not wanted:
            return []
        longest = max(w or DEFAULT_WINDOW_HOURS for w in (
            w for by in windows.values() for w in by.values()))
        touched = func.coalesce(Message.sent_at, Message.claimed_at, Message.created_at)
        first = min(e.occurred_at for e in events) - timedelta(hours=longest)
        last = max(e.occurred_at for e in events)
        by_customer: dict[int, list[tuple[Any, int, int]]] = {}
        for message_id, automation_id, customer_id, at in db.session.execute(select(
                Message.id, Message.automation_id, Message.customer_id, touched).where(
                Message.project_id == project_id,
                Message.customer_id.in_(sorted({e.customer_id for e in events})),
                Message.automation_id.in_(sorted(wanted)), Message.state.in_(DELIVERED),
                touched <= last, touched >= first)):
            by_customer.setdefault(customer_id, []).append((_aware(at), message_id,
                                                            automation_id))
        out = []
        for event in events:
            conversion = _credit(event, windows[event.name],
                                 by_customer.get(event.customer_id, []), defaults)
            if conversion is not None:
                out.append(conversion)
        return out


def _credit(event: Event, windows: dict[int, int | None],
            messages: list[tuple[Any, int, int]], defaults: dict[str, dict]) -> int | None:
    """``attribute``'s choice for one event among its customer's delivered messages
    ``(touched, id, automation)``: the latest before it within its automation's window."""
    if not windows:
        return None
    occurred = _aware(event.occurred_at)
    longest = timedelta(hours=max(w or DEFAULT_WINDOW_HOURS for w in windows.values()))
    candidates = sorted(((at, m, a) for at, m, a in messages
                         if a in windows and occurred - longest <= at <= occurred),
                        reverse=True)
    for at, message_id, automation_id in candidates:
        window = timedelta(hours=windows[automation_id] or DEFAULT_WINDOW_HOURS)
        if at >= occurred - window:
            return _insert(event, automation_id, message_id, defaults)
    return None


def attribute_job(event_id: int) -> int | None:
    """Job: ``attribute`` in the job's project."""
    project_id = current_project_id()
    assert project_id is not None, "attribute_job runs in a project's scope"
    return attribute(project_id, event_id)


def attribute(project_id: int, event_id: int) -> int | None:
    """Credit ``event`` to the automation that last messaged its customer; the
    conversion's id, or None (not a conversion event, no message in the window, or
    already credited)."""
    return next(iter(attribute_many(project_id, [event_id])), None)


def _aware(value):
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _insert(event: Event, automation_id: int, message_id: int,
            defaults: dict[str, dict]) -> int | None:
    spec = defaults.get(event.name) or {}
    props = event.properties or {}
    amount = props.get(spec.get("amount_property") or "amount")
    currency = props.get(spec.get("currency_property") or "currency")
    amount = float(amount) if isinstance(amount, int | float) and not isinstance(
        amount, bool) else None
    insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(Conversion).values(
        project_id=event.project_id, automation_id=automation_id, message_id=message_id,
        event_id=event.id, customer_id=event.customer_id, event_name=event.name,
        amount=amount, currency=(currency or None) if isinstance(currency, str) else None,
        occurred_at=event.occurred_at).on_conflict_do_nothing(
        index_elements=["event_id"]).returning(Conversion.id)
    conversion_id = db.session.execute(stmt).scalar()
    db.session.commit()
    return conversion_id


def stats(project_id: int, automation_ids: list[int]) -> dict[int, dict]:
    """Per automation: messages delivered, converted customers, converted amount per
    currency (never summed across currencies)."""
    out = {a: {"sent": 0, "conversions": 0, "converted_customers": 0, "recovered": []}
           for a in automation_ids}
    if not automation_ids:
        return out
    for automation_id, sent in db.session.execute(select(
            Message.automation_id, func.count(Message.id)).where(
            Message.project_id == project_id, Message.automation_id.in_(automation_ids),
            Message.state.in_(DELIVERED)).group_by(Message.automation_id)):
        out[automation_id]["sent"] = sent
    for automation_id, conversions, customers in db.session.execute(select(
            Conversion.automation_id, func.count(Conversion.id),
            func.count(func.distinct(Conversion.customer_id))).where(
            Conversion.project_id == project_id,
            Conversion.automation_id.in_(automation_ids)).group_by(Conversion.automation_id)):
        out[automation_id].update(conversions=conversions, converted_customers=customers)
    for automation_id, currency, amount in db.session.execute(select(
            Conversion.automation_id, Conversion.currency, func.sum(Conversion.amount)).where(
            Conversion.project_id == project_id, Conversion.automation_id.in_(automation_ids),
            Conversion.amount.is_not(None)).group_by(Conversion.automation_id,
                                                      Conversion.currency)
            .order_by(Conversion.currency)):
        out[automation_id]["recovered"].append({"currency": currency,
                                                "amount": round(float(amount or 0), 2)})
    return out
