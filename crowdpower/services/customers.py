"""Customers by a plugin's external key: the bulk match-or-create every importer needs.

A plugin hands over records it knows by its own key (a billing system's customer id, a
CRM id…) and gets back the CrowdPower customer of each: matched by email
(case-insensitive), else created; records sharing an email share one customer; a record
without email is matched by, or created with, ``external_id`` = its key (so keys must not
collide between plugins: prefix them if yours could). A plugin may keep its own key →
customer links too (a billing system may give one person several ids). Large batches on PostgreSQL draw ids from the
sequence and are COPYed (an initial sync's pages), small ones are one ``INSERT …
RETURNING``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from crowdpower import bulk
from crowdpower.extensions import db
from crowdpower.models import Customer, utcnow


@dataclass(frozen=True)
class ExternalCustomer:
    """A customer as a plugin knows it: ``key`` is the plugin's own id of it."""

    key: str
    email: str | None = None
    name: str | None = None
    created_at: datetime | None = None


def normalise_email(email: str | None) -> str | None:
    """The case-insensitive key customers are matched by."""
    return Customer.normalise_email(email)


def match_or_create(project_id: int, records: Sequence[ExternalCustomer]) -> dict[str, int]:
    """``{record.key: customer id}`` for every record: by email, else a new customer."""
    if not records:
        return {}
    now = utcnow()
    keys = {normalise_email(r.email) for r in records} - {None}
    by_email = dict(db.session.execute(select(Customer.email_key, Customer.id).where(
        Customer.project_id == project_id, bulk.among(Customer.email_key, sorted(keys)))).all()) \
        if keys else {}
    anonymous = sorted({r.key for r in records if not normalise_email(r.email)})
    by_key = dict(db.session.execute(select(Customer.external_id, Customer.id).where(
        Customer.project_id == project_id, Customer.email_key.is_(None),
        bulk.among(Customer.external_id, anonymous))).all()) if anonymous else {}
    out: dict[str, int] = {}
    new_rows: list[dict] = []
    pending: dict[str, list[str]] = {}
    for r in records:
        email_key = normalise_email(r.email)
        if email_key and email_key in by_email:
            out[r.key] = by_email[email_key]
            continue
        if not email_key and r.key in by_key:
            out[r.key] = by_key[r.key]
            continue
        group = email_key or ("id:" + r.key)
        if group in pending:
            pending[group].append(r.key)  # another record with this email
            continue
        pending[group] = [r.key]
        new_rows.append({"project_id": project_id, "email": (r.email or "").strip() or None,
                         "email_key": email_key, "name": r.name,
                         "external_id": None if email_key else r.key,
                         "created_at": r.created_at or now})
    if not new_rows:
        return out
    table = Customer.__table__
    if bulk.copies(len(new_rows)):
        # Ids drawn from the sequence, rows COPYed (a concurrent insert of the same email
        # fails this flush, as the INSERT below would).
        ids = bulk.next_ids(table, len(new_rows))
        bulk.copy_rows(table, [{**row, "id": customer_id, "updated_at": now}
                               for row, customer_id in zip(new_rows, ids, strict=True)])
    else:  # one round trip, ids in input order
        insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
        ids = db.session.connection().execute(
            insert(table).returning(table.c.id, sort_by_parameter_order=True),
            new_rows).scalars().all()
    for row, customer_id in zip(new_rows, ids, strict=True):
        for key in pending[row["email_key"] or ("id:" + row["external_id"])]:
            out[key] = customer_id
    return out
