"""The daily MRR snapshot: set-based SQL over the traits plugins name as MRR.

``take_snapshot(project_id, day)`` replaces that day's rows (idempotent per day: the
periodic job runs it every hour, so today's row ends as the day's last state) in one
transaction of a few INSERT … SELECT statements, whatever the number of customers:
the customers' MRR per currency from the trait values, the movements against the
previous snapshotted day, the per-currency totals. No row goes through Python.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

from flask import current_app
from sqlalchemy import Date, bindparam, select, text

from crowdpower.extensions import db
from crowdpower.models import Project, UTCDateTime, utcnow
from crowdpower.plugins import get_pm
from crowdpower.tenancy import unscoped

log = logging.getLogger(__name__)


def sources(project_id: int) -> list[dict]:
    """``[{"mrr_trait", "currency_trait"}]`` the enabled plugins declare for a project."""
    found = []
    for batch in get_pm().hook.crowdpower_revenue_sources(project_id=project_id):
        for source in batch or []:
            if source.get("mrr_trait") and source.get("currency_trait"):
                found.append(source)
    return found


def _typed(sql: str):
    """``text(sql)`` with its date parameters bound as dates (SQLite stores ISO text)."""
    dates = [bindparam(n, type_=Date()) for n in ("day", "prev", "cutoff") if f":{n}" in sql]
    return text(sql).bindparams(*dates)


DELETE_DAY = [
    _typed("DELETE FROM mrr_snapshots WHERE project_id = :p AND day = :day"),
    _typed("DELETE FROM mrr_movements WHERE project_id = :p AND day = :day"),
    _typed("DELETE FROM mrr_daily_totals WHERE project_id = :p AND day = :day"),
    _typed("DELETE FROM mrr_snapshot_runs WHERE project_id = :p AND day = :day"),
]

# One source's paying customers: the MRR trait (> 0) joined to its currency trait.
SOURCE_ROWS = """SELECT m.customer_id AS customer_id, lower(c.value_text) AS currency,
    m.value_num AS mrr
FROM trait_values m JOIN trait_values c
    ON c.customer_id = m.customer_id AND c.key = :currency_key{n}
WHERE m.project_id = :p AND m.key = :mrr_key{n} AND m.value_num > 0
    AND c.value_text IS NOT NULL"""

# A FULL JOIN of the two days: PostgreSQL can only hash or merge it (never a nested
# loop misled by a table whose statistics predate today's million rows).
MOVEMENTS = _typed("""
INSERT INTO mrr_movements (project_id, day, customer_id, currency, kind, mrr_before,
    mrr_after, amount)
SELECT :p, :day, COALESCE(t.customer_id, y.customer_id), COALESCE(t.currency, y.currency),
    CASE WHEN t.mrr IS NULL THEN 'churn'
        WHEN y.mrr IS NULL THEN
            CASE WHEN EXISTS (SELECT 1 FROM mrr_movements o WHERE o.project_id = :p
                              AND o.customer_id = t.customer_id AND o.currency = t.currency
                              AND o.kind = 'churn' AND o.day < :day)
                 THEN 'reactivation' ELSE 'new' END
        WHEN t.mrr > y.mrr THEN 'expansion' ELSE 'contraction' END,
    COALESCE(y.mrr, 0), COALESCE(t.mrr, 0), COALESCE(t.mrr, 0) - COALESCE(y.mrr, 0)
FROM (SELECT customer_id, currency, mrr FROM mrr_snapshots
      WHERE project_id = :p AND day = :day) AS t
FULL OUTER JOIN (SELECT customer_id, currency, mrr FROM mrr_snapshots
                 WHERE project_id = :p AND day = :prev) AS y
    ON y.customer_id = t.customer_id AND y.currency = t.currency
WHERE t.mrr IS NULL OR y.mrr IS NULL OR abs(t.mrr - y.mrr) > 0.0001
""")


TOTALS = _typed("""
INSERT INTO mrr_daily_totals (project_id, day, currency, mrr, customers)
SELECT project_id, day, currency, SUM(mrr), COUNT(*) FROM mrr_snapshots
WHERE project_id = :p AND day = :day GROUP BY project_id, day, currency
""")

PREVIOUS_DAY = _typed("""
SELECT MAX(day) FROM mrr_snapshot_runs WHERE project_id = :p AND day < :day
""")


def take_snapshot(project_id: int, day: date | None = None) -> dict:
    """Snapshot the project's MRR per customer for ``day`` (today, UTC) and derive the
    day's movements; replaces an earlier snapshot of the same day. Returns counts."""
    day = day or datetime.now(UTC).date()
    found = sources(project_id)
    conn = db.session.connection()
    for stmt in DELETE_DAY:
        conn.execute(stmt, {"p": project_id, "day": day})
    customers = 0
    if found:
        params: dict = {"p": project_id, "day": day}
        parts = []
        for n, source in enumerate(found):
            parts.append(SOURCE_ROWS.format(n=n))
            params[f"mrr_key{n}"] = source["mrr_trait"]
            params[f"currency_key{n}"] = source["currency_trait"]
        insert = _typed(
            "INSERT INTO mrr_snapshots (project_id, day, customer_id, currency, mrr) "
            "SELECT :p, :day, s.customer_id, s.currency, SUM(s.mrr) FROM ("
            + " UNION ALL ".join(parts) + ") AS s GROUP BY s.customer_id, s.currency")
        customers = conn.execute(insert, params).rowcount or 0
    prev = conn.execute(PREVIOUS_DAY, {"p": project_id, "day": day}).scalar()
    if isinstance(prev, str):  # SQLite hands MAX(date) back as text
        prev = date.fromisoformat(prev)
    moved = 0
    if prev is not None:  # the first snapshot is the baseline: no movements
        moved = conn.execute(MOVEMENTS, {"p": project_id, "day": day, "prev": prev}).rowcount
    conn.execute(TOTALS, {"p": project_id, "day": day})
    conn.execute(text("INSERT INTO mrr_snapshot_runs (project_id, day, customers, taken_at) "
                      "VALUES (:p, :day, :customers, :at)").bindparams(
        bindparam("day", type_=Date()), bindparam("at", type_=UTCDateTime())),
        {"p": project_id, "day": day, "customers": customers, "at": utcnow()})
    retention = int(current_app.config.get("REVENUE_SNAPSHOT_RETENTION_DAYS") or 0)
    if retention:  # per-customer rows age out; movements and totals keep the history
        conn.execute(_typed("DELETE FROM mrr_snapshots WHERE project_id = :p "
                            "AND day < :cutoff"),
                     {"p": project_id, "cutoff": day - timedelta(days=retention)})
    db.session.commit()
    return {"day": day.isoformat(), "customers": customers, "movements": moved or 0,
            "previous_day": prev.isoformat() if prev else None}


def snapshot_all() -> int:
    """Periodic job: today's snapshot of every project with a revenue source."""
    with unscoped():
        project_ids = list(db.session.scalars(select(Project.id).order_by(Project.id)))
    done = 0
    for project_id in project_ids:
        if not sources(project_id):
            continue
        try:
            take_snapshot(project_id)
            done += 1
        except Exception:
            db.session.rollback()
            log.exception("revenue snapshot of project %s failed", project_id)
    return done
