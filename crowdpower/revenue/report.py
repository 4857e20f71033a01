"""The figures of the Revenue page and ``GET /api/v1/revenue``, per currency.

Money is never summed across currencies: each currency has its own MRR, series and
movements; the *main* currency (the largest MRR on the latest snapshot, unless the
project sets ``settings["currency"]``) is listed first and flagged.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime

from sqlalchemy import func, select

from crowdpower.extensions import db
from crowdpower.models import Project
from crowdpower.revenue.models import KINDS, MrrDailyTotal, MrrMovement, MrrSnapshotRun


def _day(value) -> date:
    return date.fromisoformat(value) if isinstance(value, str) else value


def _money(value: float | None) -> float:
    return round(float(value or 0), 2)


def report(project_id: int, start: date, end: date) -> dict:
    """MRR now (latest snapshot), daily series over [start, end] and its movements."""
    latest = db.session.scalar(select(func.max(MrrSnapshotRun.day)).where(
        MrrSnapshotRun.project_id == project_id))
    latest = _day(latest) if latest is not None else None
    now: dict[str, dict] = {}
    if latest is not None:
        for currency, mrr, customers in db.session.execute(select(
                MrrDailyTotal.currency, MrrDailyTotal.mrr, MrrDailyTotal.customers).where(
                MrrDailyTotal.project_id == project_id, MrrDailyTotal.day == latest)):
            now[currency] = {"mrr": _money(mrr), "customers": customers}
    series: dict[str, list] = defaultdict(list)
    for day, currency, mrr, customers in db.session.execute(select(
            MrrDailyTotal.day, MrrDailyTotal.currency, MrrDailyTotal.mrr,
            MrrDailyTotal.customers).where(
            MrrDailyTotal.project_id == project_id, MrrDailyTotal.day >= start,
            MrrDailyTotal.day <= end).order_by(MrrDailyTotal.day)):
        series[currency].append({"date": _day(day).isoformat(), "mrr": _money(mrr),
                                 "customers": customers})
    moves: dict[str, dict] = defaultdict(dict)
    for currency, kind, amount, customers in db.session.execute(select(
            MrrMovement.currency, MrrMovement.kind, func.sum(MrrMovement.amount),
            func.count(func.distinct(MrrMovement.customer_id))).where(
            MrrMovement.project_id == project_id, MrrMovement.day >= start,
            MrrMovement.day <= end).group_by(MrrMovement.currency, MrrMovement.kind)):
        moves[currency][kind] = {"amount": _money(amount), "customers": customers}
    currencies = set(now) | set(series) | set(moves)
    project = db.session.get(Project, project_id)
    main = ((project.settings or {}).get("currency") if project else None) or (
        max(now, key=lambda c: (now[c]["mrr"], c)) if now else None) or (
        sorted(currencies)[0] if currencies else None)
    out = []
    for currency in sorted(currencies, key=lambda c: (c != main, c)):
        movements = {k: moves[currency].get(k, {"amount": 0.0, "customers": 0}) for k in KINDS}
        out.append({"currency": currency, "main": currency == main,
                    "mrr": now.get(currency, {}).get("mrr", 0.0),
                    "customers": now.get(currency, {}).get("customers", 0),
                    "movements": movements,
                    "net_new_mrr": _money(sum(m["amount"] for m in movements.values())),
                    "series": series.get(currency, [])})
    return {"period": {"start": start.isoformat(), "end": end.isoformat()},
            "as_of": latest.isoformat() if latest else None,
            "main_currency": main, "currencies": out}


def month_bounds(month: str | None, today: date) -> tuple[date, date]:
    """``YYYY-MM`` (default: this month) → its first and last day. ValueError if bad."""
    if month:
        first = datetime.strptime(month, "%Y-%m").date()
    else:
        first = today.replace(day=1)
    nxt = first.replace(year=first.year + (first.month == 12),
                        month=first.month % 12 + 1)
    return first, date.fromordinal(nxt.toordinal() - 1)
