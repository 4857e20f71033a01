"""Customer data services shared by the API, the web UI and plugins.

Writes here are the only way traits and events enter the database, so encoding
(typed copies for segments) and idempotency (events' external ids) live in one place.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import delete, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from crowdpower import bulk
from crowdpower.extensions import db
from crowdpower.isotime import iso
from crowdpower.jobs import after_commit
from crowdpower.models import Customer, Event, TraitValue, utcnow
from crowdpower.plugins import get_pm
from crowdpower.tenancy import project_scope


def encode_trait(value: Any) -> tuple[Any, str | None, float | None]:
    """(JSON value, text copy, numeric copy) for a trait value."""
    if isinstance(value, datetime):
        value = iso(value, seconds=True)
    if isinstance(value, bool):
        return value, "true" if value else "false", None
    if isinstance(value, int | float):
        return value, None, float(value)
    if isinstance(value, str):
        return value, value[:500], None
    return value, None, None


def bulk_set_traits(
    project_id: int, rows: Iterable[tuple[int, dict[str, Any]]], source: str = "custom"
) -> int:
    """Upsert traits of many customers in one statement per batch; ``None`` deletes a trait.

    Rows are ``(customer_id, {key: value})``. Returns the number of values written.
    """
    now = utcnow()
    rows = list(rows)
    if db.engine.dialect.name == "postgresql":
        return _set_traits_in_sql(project_id, rows, source, now)
    current = _current_values(project_id, [c for c, _t in rows])
    changed, new, deletes = [], [], []
    for customer_id, traits in rows:
        have = current.get(customer_id, {})
        for key, raw in traits.items():
            if raw is None:
                if key in have:
                    deletes.append((customer_id, key))
                continue
            value, text, num = encode_trait(raw)
            if key in have and have[key] == (value, source):
                continue  # unchanged: no write (webhooks touch a few traits of 20+)
            (changed if key in have else new).append({
                "project_id": project_id, "customer_id": customer_id, "key": key,
                "value": value, "value_text": text, "value_num": num, "source": source,
                "updated_at": now})
    update = ["value", "value_text", "value_num", "source", "updated_at"]
    bulk.upsert(TraitValue.__table__, changed, ["customer_id", "key"], update)
    # Keys not stored a moment ago (all of them, in an initial sync): a plain COPY.
    bulk.insert_new(TraitValue.__table__, new, ["customer_id", "key"], update)
    # Customers that drop the same set of keys share one DELETE (customer_id IN … AND
    # key IN …), which the (customer_id, key) primary key serves directly.
    dropped: dict[int, list[str]] = {}
    for customer_id, key in deletes:
        dropped.setdefault(customer_id, []).append(key)
    groups: dict[tuple[str, ...], list[int]] = {}
    for customer_id, keys in dropped.items():
        groups.setdefault(tuple(sorted(keys)), []).append(customer_id)
    for keys, ids in groups.items():
        for start in range(0, len(ids), 1000):
            db.session.connection().execute(
                delete(TraitValue.__table__).where(
                    TraitValue.__table__.c.project_id == project_id,
                    TraitValue.__table__.c.customer_id.in_(ids[start:start + 1000]),
                    TraitValue.__table__.c.key.in_(keys),
                )
            )
    return len(changed) + len(new)


# The traits of many customers go to PostgreSQL as one JSON document ({customer: {key:
# value}}) and are spread into rows there: one parameter instead of ~20 rows per customer
# formatted in Python. The typed copies are derived as ``encode_trait`` derives them,
# unchanged values are not rewritten, and nulls delete.
_INCOMING = """
    SELECT c.key::integer AS customer_id, e.key AS key, e.value AS value
    FROM jsonb_each(CAST(:doc AS jsonb)) AS c, jsonb_each(c.value) AS e"""
_DELETE_NULLS = text(f"""
    DELETE FROM trait_values t USING ({_INCOMING}) AS i
    WHERE t.project_id = :project_id AND t.customer_id = i.customer_id AND t.key = i.key
      AND jsonb_typeof(i.value) = 'null'""")
_UPSERT = text(f"""
    INSERT INTO trait_values (project_id, customer_id, key, value, value_text, value_num,
                              source, updated_at)
    SELECT :project_id, i.customer_id, i.key, i.value,
           CASE jsonb_typeof(i.value) WHEN 'string' THEN left(i.value #>> '{{}}', 500)
                                      WHEN 'boolean' THEN i.value::text END,
           CASE jsonb_typeof(i.value) WHEN 'number' THEN i.value::float8 END,
           :source, :now
    FROM ({_INCOMING}) AS i
    WHERE jsonb_typeof(i.value) <> 'null'
    ON CONFLICT (customer_id, key) DO UPDATE SET
        value = EXCLUDED.value, value_text = EXCLUDED.value_text,
        value_num = EXCLUDED.value_num, source = EXCLUDED.source,
        updated_at = EXCLUDED.updated_at
    WHERE trait_values.value IS DISTINCT FROM EXCLUDED.value
       OR trait_values.source IS DISTINCT FROM EXCLUDED.source""")


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value, seconds=True)
    raise TypeError(f"a trait value must be JSON, not {type(value).__name__}")


def _set_traits_in_sql(project_id: int, rows: list[tuple[int, dict[str, Any]]],
                       source: str, now: datetime) -> int:
    """``bulk_set_traits`` on PostgreSQL: two statements per batch, whatever its size."""
    doc: dict[str, dict[str, Any]] = {}
    for customer_id, traits in rows:
        doc.setdefault(str(customer_id), {}).update(traits)
    if not any(doc.values()):
        return 0
    try:  # orjson: the stdlib encoder was a few % of the sync's traits thread
        encoded = orjson.dumps(doc, default=_json_value,
                               option=orjson.OPT_PASSTHROUGH_DATETIME).decode()
    except TypeError:  # integers beyond 64 bits
        encoded = json.dumps(doc, default=_json_value)
    connection = db.session.connection()
    if any(v is None for traits in doc.values() for v in traits.values()):
        connection.execute(_DELETE_NULLS, {"doc": encoded, "project_id": project_id})
    return connection.execute(_UPSERT, {"doc": encoded, "project_id": project_id,
                                        "source": source, "now": now}).rowcount


def _current_values(project_id: int, customer_ids: list[int]) -> dict[int, dict[str, tuple]]:
    """``{customer: {key: (value, source)}}`` as stored, read in one query per 1000."""
    found: dict[int, dict[str, tuple]] = {}
    table = TraitValue.__table__
    for start in range(0, len(customer_ids), 1000):
        result = db.session.connection().execute(
            select(table.c.customer_id, table.c.key, table.c.value, table.c.source).where(
                table.c.project_id == project_id,
                bulk.among(table.c.customer_id, customer_ids[start:start + 1000])))
        for customer_id, key, value, src in result:
            found.setdefault(customer_id, {})[key] = (value, src)
    return found


def set_traits(project_id: int, customer_id: int, traits: dict[str, Any],
               source: str = "custom") -> None:
    bulk_set_traits(project_id, [(customer_id, traits)], source=source)


def get_traits(project_id: int, customer_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Traits of several customers with one query."""
    out: dict[int, dict[str, Any]] = {cid: {} for cid in customer_ids}
    if not customer_ids:
        return out
    with project_scope(project_id):
        rows = db.session.execute(
            select(TraitValue.customer_id, TraitValue.key, TraitValue.value).where(
                TraitValue.project_id == project_id, TraitValue.customer_id.in_(customer_ids)
            )
        )
        for customer_id, key, value in rows:
            out[customer_id][key] = value
    return out


def find_by_email(project_id: int, email: str | None) -> Customer | None:
    key = Customer.normalise_email(email)
    if not key:
        return None
    with project_scope(project_id):
        return db.session.scalar(
            select(Customer).where(Customer.project_id == project_id, Customer.email_key == key)
        )


def upsert_customer(
    project_id: int, email: str | None, name: str | None = None,
    traits: dict[str, Any] | None = None, source: str = "api",
) -> tuple[Customer, bool]:
    """Create the customer, or update the one with that email (ignoring case)."""
    customer = find_by_email(project_id, email)
    created = customer is None
    if created:
        customer = Customer(project_id=project_id, email=(email or "").strip() or None,
                            email_key=Customer.normalise_email(email), name=name)
        savepoint = db.session.begin_nested()
        try:
            db.session.add(customer)
            db.session.flush()
            savepoint.commit()
        except IntegrityError:  # a concurrent request created this email first: update it
            savepoint.rollback()
            customer = find_by_email(project_id, email)
            if customer is None:
                raise
            created = False
    if not created and name is not None:
        customer.name = name
    if traits:
        set_traits(project_id, customer.id, traits, source=source)
    return customer, created


def record_event(
    project_id: int, customer_id: int, name: str, properties: dict | None = None,
    occurred_at: datetime | None = None, source: str = "api", external_id: str | None = None,
) -> Event | None:
    """Record an event; returns None if ``external_id`` was already recorded.

    The ``crowdpower_event_recorded`` hook fires after the transaction commits.
    """
    if external_id is not None:
        with project_scope(project_id):
            seen = db.session.scalar(select(Event.id).where(
                Event.project_id == project_id, Event.external_id == external_id))
        if seen:
            return None
    event = Event(project_id=project_id, customer_id=customer_id, name=name,
                  properties=json.loads(json.dumps(properties or {}, default=str)),
                  occurred_at=occurred_at or utcnow(), source=source, external_id=external_id)
    savepoint = db.session.begin_nested()
    try:
        db.session.add(event)
        db.session.flush()
    except IntegrityError:  # a concurrent delivery won the unique (project, external id)
        savepoint.rollback()
        if external_id is None:
            raise
        return None
    savepoint.commit()

    event_id = event.id
    after_commit(lambda: get_pm().hook.crowdpower_event_recorded(
        project_id=project_id, event_id=event_id))
    return event


@dataclass(frozen=True)
class NewEvent:
    """One event for ``record_events`` (the arguments of ``record_event``)."""

    customer_id: int
    name: str
    properties: dict | None = None
    occurred_at: datetime | None = None
    source: str = "api"
    external_id: str | None = None


def record_events(project_id: int, events: Sequence[NewEvent]) -> list[int | None]:
    """Record many events in a few statements; per event its id, or None where its
    ``external_id`` was already recorded (before, concurrently, or earlier in ``events``).

    The same rules as ``record_event``, for a batch (a webhook inbox drain): one read of
    the external ids already taken, one ``INSERT … ON CONFLICT DO NOTHING``, and one
    ``announce_events`` for the batch.
    """
    if not events:
        return []
    now = utcnow()
    table = Event.__table__
    wanted = sorted({e.external_id for e in events if e.external_id is not None})
    taken: set[str] = set()
    for start in range(0, len(wanted), 1000):
        taken.update(db.session.connection().execute(select(table.c.external_id).where(
            table.c.project_id == project_id,
            bulk.among(table.c.external_id, wanted[start:start + 1000]))).scalars())
    keyed: list[tuple[int, dict]] = []
    anonymous: list[tuple[int, dict]] = []
    for index, e in enumerate(events):
        if e.external_id is not None:
            if e.external_id in taken:
                continue
            taken.add(e.external_id)
        row = {"project_id": project_id, "customer_id": e.customer_id, "name": e.name,
               "properties": e.properties or {}, "occurred_at": e.occurred_at or now,
               "recorded_at": now, "source": e.source, "external_id": e.external_id}
        if e.external_id is None or db.engine.dialect.name != "postgresql":
            row["properties"] = json.loads(json.dumps(row["properties"], default=str))
        (keyed if e.external_id is not None else anonymous).append((index, row))
    out: list[int | None] = [None] * len(events)
    postgres = db.engine.dialect.name == "postgresql"
    insert = postgresql.insert if postgres else sqlite.insert
    connection = db.session.connection()
    if keyed and postgres:
        made = _insert_keyed_in_sql(project_id, [row for _i, row in keyed], now)
        for index, row in keyed:
            out[index] = made.get(row["external_id"])
    elif keyed:  # a concurrent delivery may have won an external id since the read
        made = dict((ext, event_id) for event_id, ext in connection.execute(
            insert(table).on_conflict_do_nothing(index_elements=["project_id", "external_id"])
            .returning(table.c.id, table.c.external_id), [row for _i, row in keyed]))
        for index, row in keyed:
            out[index] = made.get(row["external_id"])
    if anonymous:
        ids = connection.execute(insert(table).returning(table.c.id,
                                                         sort_by_parameter_order=True),
                                 [row for _i, row in anonymous]).scalars().all()
        for (index, _row), event_id in zip(anonymous, ids, strict=True):
            out[index] = event_id
    recorded = sorted(i for i in out if i is not None)
    if recorded:
        announce_events(project_id, recorded)
    return out


# One constant statement whatever the batch's size (the events travel as one JSON
# document): psycopg and PostgreSQL parse and plan it once, not a 1000-row VALUES list
# per call. Rows are inserted in the batch's order, so ids follow it as before.
_INSERT_KEYED = text("""
INSERT INTO events (project_id, customer_id, name, properties, occurred_at, recorded_at,
                    source, external_id)
SELECT :project_id, r.customer_id, r.name, COALESCE(r.properties, '{}'::jsonb),
       r.occurred_at, :now, r.source, r.external_id
FROM ROWS FROM (jsonb_to_recordset(CAST(:doc AS jsonb)) AS (
        customer_id integer, name text, properties jsonb, occurred_at timestamptz,
        source text, external_id text))
     WITH ORDINALITY AS r(customer_id, name, properties, occurred_at, source, external_id, n)
ORDER BY r.n
ON CONFLICT (project_id, external_id) DO NOTHING
RETURNING id, external_id
""")


def _utc_iso(value: datetime) -> str:
    """As ``UTCDateTime`` binds it: naive means UTC."""
    return (value.replace(tzinfo=UTC) if value.tzinfo is None
            else value.astimezone(UTC)).isoformat()


def _insert_keyed_in_sql(project_id: int, rows: list[dict], now: datetime) -> dict[str, int]:
    """``record_events``' keyed insert on PostgreSQL: ``{external id: event id}`` of the
    rows inserted (an id taken concurrently since the read is skipped)."""
    doc = json.dumps([{"customer_id": r["customer_id"], "name": r["name"],
                       "properties": r["properties"], "occurred_at": _utc_iso(r["occurred_at"]),
                       "source": r["source"], "external_id": r["external_id"]} for r in rows],
                     default=str)
    return {ext: event_id for event_id, ext in db.session.connection().execute(
        _INSERT_KEYED, {"doc": doc, "project_id": project_id, "now": now})}


def announce_events(project_id: int, event_ids: list[int]) -> None:
    """Tell plugins about a batch of events being recorded: ``crowdpower_events_recording``
    now, in the recording transaction, to the plugins implementing it (their writes commit
    with the events; what must see them committed goes through ``after_commit``), and
    ``crowdpower_event_recorded`` per event after commit to the others."""
    pm = get_pm()
    batched = {impl.plugin for impl in pm.hook.crowdpower_events_recording.get_hookimpls()}
    if batched:
        pm.hook.crowdpower_events_recording(project_id=project_id, event_ids=list(event_ids))
    single = pm.subset_hook_caller("crowdpower_event_recorded", remove_plugins=batched) \
        if batched else pm.hook.crowdpower_event_recorded
    if single.get_hookimpls():
        after_commit(lambda: [single(project_id=project_id, event_id=event_id)
                              for event_id in event_ids])


def customer_json(customer: Customer, traits: dict[str, Any]) -> dict:
    return {
        "id": customer.id,
        "email": customer.email,
        "name": customer.name,
        "created_at": iso(customer.created_at),
        "unsubscribed": customer.unsubscribed_at is not None,
        "traits": traits,
    }
