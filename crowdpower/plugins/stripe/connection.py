"""The one way to read a project's Stripe connection.

``connection`` returns the row (to change it, or to lock it: ``for_update``);
``snapshot`` the few facts applying events needs, read once per job (a drain applies
many events) and cached on ``g`` until ``forget``.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import g
from sqlalchemy import select

from crowdpower.plugins.stripe.models import StripeConnection
from crowdpower.services import db, project_scope


def connection(project_id: int, *, for_update: bool = False) -> StripeConnection | None:
    """The project's connection row (one per project), or None."""
    with project_scope(project_id):
        stmt = select(StripeConnection).where(StripeConnection.project_id == project_id)
        return db.session.scalar(stmt.with_for_update() if for_update else stmt)


@dataclass(frozen=True)
class Connection:
    """What applying an event needs of the project's connection (no secrets)."""

    status: str
    stripe_user_id: str | None
    livemode: bool
    accept_test_data: bool
    kind: str = "connect"
    test_data: bool = False  # this event's objects are test-mode ones of a live account


def snapshot(project_id: int) -> Connection | None:
    """The project's connection as ``Connection``, read once per job."""
    cache = g.setdefault("stripe_connections", {})
    if project_id not in cache:
        row = connection(project_id)
        cache[project_id] = Connection(
            row.status, row.stripe_user_id, bool(row.livemode), bool(row.accept_test_data),
            row.kind or "connect") if row is not None else None
    return cache[project_id]


def forget() -> None:
    """Drop this job's cached connections and clients (the connection changed)."""
    g.pop("stripe_connections", None)
    g.pop("stripe_clients", None)


def accepts(conn: Connection | StripeConnection, livemode: bool) -> bool:
    """Live connections take live events (and test events if the tenant opted in)."""
    if livemode == bool(conn.livemode):
        return True
    return bool(conn.livemode) and not livemode and bool(conn.accept_test_data)
