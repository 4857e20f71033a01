"""Segments: saved rules evaluated in SQL on read, so membership is always current."""

from __future__ import annotations

from sqlalchemy import func, select

from crowdpower.extensions import db
from crowdpower.models import Customer, Segment
from crowdpower.rules import compile_rule


def condition(segment: Segment):
    return compile_rule(segment.rules or {"all": []}, segment.project_id)


def count(segment: Segment) -> int:
    return db.session.scalar(
        select(func.count()).select_from(Customer).where(
            Customer.project_id == segment.project_id, condition(segment))
    ) or 0


def with_counts(project_id: int) -> list[tuple[Segment, int]]:
    rows = db.session.scalars(
        select(Segment).where(Segment.project_id == project_id).order_by(Segment.id))
    return [(s, count(s)) for s in rows]


def seed(project_id: int, seeds: list[dict]) -> list[Segment]:
    """Create missing segments by name (idempotent: a reseed creates no duplicates)."""
    existing = {s.name: s for s in db.session.scalars(
        select(Segment).where(Segment.project_id == project_id))}
    out = []
    for spec in seeds:
        segment = existing.get(spec["name"])
        if segment is None:
            segment = Segment(project_id=project_id, name=spec["name"],
                              description=spec.get("description", ""), rules=spec["rules"],
                              source=spec.get("source", "custom"))
            db.session.add(segment)
        out.append(segment)
    db.session.flush()
    return out
