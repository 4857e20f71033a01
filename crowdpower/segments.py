"""Segments: saved rules evaluated in SQL on read, so membership is always current.

Counts use the set form of a rule (``rules.compile_members``): a single condition is
one index-only range count over ``trait_values``; member lists use the EXISTS form
(``rules.compile_rule``), which is cheap for a page of customers in id order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from crowdpower.extensions import db
from crowdpower.models import Customer, Segment
from crowdpower.rules import RuleError, compile_members, compile_rule, validate
from crowdpower.tenancy import project_scope

EMPTY_RULE: dict = {"all": []}


class DuplicateSegment(ValueError):
    """A segment with that name exists in the project (names are unique per project)."""


def condition(segment: Segment):
    """SQL condition on ``Customer`` for listing the segment's members."""
    return compile_rule(segment.rules or EMPTY_RULE, segment.project_id)


def count_rule(project_id: int, rule: dict, now: datetime | None = None) -> int:
    """How many customers of ``project_id`` match ``rule``."""
    positive, members = compile_members(rule or EMPTY_RULE, project_id, now)
    with project_scope(project_id):
        # each id appears once in ``members``: count its rows, from the indexes alone
        matched = db.session.scalar(members.with_only_columns(
            func.count(), maintain_column_froms=True)) or 0
        if positive:
            return matched
        total = db.session.scalar(select(func.count()).select_from(Customer).where(
            Customer.project_id == project_id)) or 0
        return total - matched


def count(segment: Segment) -> int:
    return count_rule(segment.project_id, segment.rules or EMPTY_RULE)


def with_counts(project_id: int) -> list[tuple[Segment, int]]:
    with project_scope(project_id):
        rows = list(db.session.scalars(
            select(Segment).where(Segment.project_id == project_id).order_by(Segment.id)))
    return [(s, count(s)) for s in rows]


def clean_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise RuleError("a segment needs a name")
    name = name.strip()
    if len(name) > 200:
        raise RuleError("a segment name is at most 200 characters")
    return name


def create(project_id: int, name: Any, rules: Any, description: Any = "",
           source: str = "custom") -> Segment:
    """Validate and add a segment; ``RuleError`` says what is wrong with the input."""
    name = clean_name(name)
    validate(rules)
    if description is not None and not isinstance(description, str):
        raise RuleError("description must be a string")
    with project_scope(project_id):
        taken = db.session.scalar(select(Segment.id).where(
            Segment.project_id == project_id, Segment.name == name))
    if taken is not None:
        raise DuplicateSegment(f"a segment named {name!r} already exists")
    segment = Segment(project_id=project_id, name=name, description=description or "",
                      rules=rules, source=source)
    savepoint = db.session.begin_nested()
    try:
        db.session.add(segment)
        db.session.flush()
    except IntegrityError:  # a concurrent request took the name between check and insert
        savepoint.rollback()
        raise DuplicateSegment(f"a segment named {name!r} already exists") from None
    savepoint.commit()
    return segment


def seed(project_id: int, seeds: list[dict]) -> list[Segment]:
    """Create missing segments by name (idempotent: a reseed creates no duplicates).

    Seeds come from plugins; a malformed rule raises ``RuleError`` at enable time
    rather than breaking every later count.
    """
    with project_scope(project_id):
        existing = {s.name: s for s in db.session.scalars(
            select(Segment).where(Segment.project_id == project_id))}
    out = []
    for spec in seeds:
        segment = existing.get(spec["name"])
        if segment is None:
            validate(spec["rules"])
            segment = Segment(project_id=project_id, name=spec["name"],
                              description=spec.get("description", ""), rules=spec["rules"],
                              source=spec.get("source", "custom"))
            db.session.add(segment)
            existing[spec["name"]] = segment
        out.append(segment)
    db.session.flush()
    return out
