"""The rule language of segments and automation conditions.

A rule is JSON: ``{"all": [cond, ...]}`` or ``{"any": [cond, ...]}`` (nestable), where
a condition is ``{"trait": key, "op": op, "value": v}``. Operators: ``eq``, ``neq``,
``in``, ``not_in``, ``exists``, ``not_exists``, ``gt``, ``gte``, ``lt``, ``lte``,
``within_last`` / ``before_last`` (value ``{"days": N}`` or a number of days; for
date traits). Numbers compare numerically, strings (and ISO dates) as text; a value
of another type never matches, and the negative operators (``neq``, ``not_in``,
``not_exists``) also match customers who lack the trait.

Three evaluators share these semantics, and the table tests hold them to it:
``compile_rule`` (an EXISTS condition on ``Customer``, for paginated member lists),
``compile_members`` (a join/anti-join of index scans, for fast counts) and
``evaluate`` (a plain dict: automation conditions, and the tests' reference). All
raise ``RuleError`` on malformed input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, false, not_, or_, select, true, union

from crowdpower import isotime
from crowdpower.models import Customer, TraitValue

OPS = {"eq", "neq", "in", "not_in", "exists", "not_exists", "gt", "gte", "lt", "lte",
       "within_last", "before_last"}
NEGATIVE = {"neq": "eq", "not_in": "in", "not_exists": "exists"}
MAX_DEPTH = 5
MAX_CONDITIONS = 25   # conditions and groups in one rule: counts stay one cheap query
MAX_LIST = 100        # values of one in/not_in
MAX_KEY = 100         # a trait name (TraitValue.key)
MAX_DAYS = 36_600  # ~100 years: further back than any stored date, and no datetime overflow
TEXT_LIMIT = 500  # TraitValue.value_text keeps this many characters


class RuleError(ValueError):
    """A rule that cannot be understood; the message says why."""


def iso(dt: datetime) -> str:
    """Whole-second UTC text, as date traits are stored (compared as text)."""
    return isotime.iso(dt, seconds=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    """A literal a trait can equal: string, boolean or finite number."""
    if _is_number(value):
        return math.isfinite(value)
    return isinstance(value, str | bool)


def _days(value: Any) -> float:
    if isinstance(value, dict):
        value = value.get("days")
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise RuleError("within_last/before_last need a non-negative number of days")
    if value > MAX_DAYS:
        raise RuleError(f"within_last/before_last accept at most {MAX_DAYS} days")
    return float(value)


def validate(rule: Any, depth: int = 0) -> None:
    """Check a rule's shape and size; raise ``RuleError`` with a readable message.

    Size and depth are checked before anything else looks at the rule, so a huge rule
    is refused before it is saved or counted.
    """
    nodes = _count_nodes(rule, 0)
    if nodes > MAX_CONDITIONS:
        raise RuleError(f"a rule has at most {MAX_CONDITIONS} conditions and groups")
    _validate(rule, depth)


def _count_nodes(rule: Any, depth: int) -> int:
    if depth > MAX_DEPTH + 1:
        raise RuleError(f"rules are nested too deeply (at most {MAX_DEPTH} levels)")
    if isinstance(rule, dict) and isinstance(rule.get("all", rule.get("any")), list):
        group = rule.get("all", rule.get("any"))
        if len(group) > MAX_CONDITIONS:
            raise RuleError(f"a rule has at most {MAX_CONDITIONS} conditions and groups")
        return 1 + sum(_count_nodes(child, depth + 1) for child in group)
    return 1


def _validate(rule: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise RuleError(f"rules are nested too deeply (at most {MAX_DEPTH} levels)")
    if not isinstance(rule, dict):
        raise RuleError("a rule must be a JSON object")
    if "all" in rule or "any" in rule:
        if len(rule) != 1:
            raise RuleError("a group is {\"all\": [...]} or {\"any\": [...]} with nothing else")
        group = rule.get("all", rule.get("any"))
        if not isinstance(group, list):
            raise RuleError("'all'/'any' must be a list of conditions")
        for child in group:
            _validate(child, depth + 1)
        return
    key, op = rule.get("trait"), rule.get("op")
    if not isinstance(key, str) or not key:
        raise RuleError("a condition needs a 'trait' name")
    if len(key) > MAX_KEY:
        raise RuleError(f"trait names are at most {MAX_KEY} characters")
    if not isinstance(op, str) or op not in OPS:
        raise RuleError(f"unknown operator {op!r}; expected one of {sorted(OPS)}")
    value = rule.get("value")
    if op in {"eq", "neq"} and not _is_scalar(value):
        raise RuleError(f"'{op}' needs a string, number or boolean value")
    if op in {"in", "not_in"} and (
        not isinstance(value, list) or not all(_is_scalar(v) for v in value)
    ):
        raise RuleError(f"'{op}' needs a list of strings, numbers or booleans")
    if op in {"in", "not_in"} and len(value) > MAX_LIST:
        raise RuleError(f"'{op}' takes at most {MAX_LIST} values")
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str) and len(item) > TEXT_LIMIT:
            raise RuleError(f"values are at most {TEXT_LIMIT} characters")
    if op in {"within_last", "before_last"}:
        _days(value)
    if op in {"gt", "gte", "lt", "lte"} and (
        isinstance(value, bool) or not _is_scalar(value)
    ):
        raise RuleError(f"'{op}' needs a number or a date string")


def _typed(value: Any) -> tuple[str, Any]:
    """(column name, stored form) for a literal compared with trait values."""
    if isinstance(value, bool):
        return "value_text", "true" if value else "false"
    if isinstance(value, int | float):
        return "value_num", float(value)
    return "value_text", str(value)[:TEXT_LIMIT]


@dataclass(frozen=True)
class Leaf:
    """A condition as "has a row of ``key`` matching ``conds``", possibly negated."""

    key: str
    conds: tuple
    negated: bool


def _leaf(node: dict, now: datetime) -> Leaf:
    """The one place a condition becomes SQL criteria on ``TraitValue``."""
    key, op, value = node["trait"], node["op"], node.get("value")
    negated = op in NEGATIVE
    op = NEGATIVE.get(op, op)
    if op == "exists":
        return Leaf(key, (), negated)
    if op == "eq":
        column, stored = _typed(value)
        return Leaf(key, (getattr(TraitValue, column) == stored,), negated)
    if op == "in":
        texts = [_typed(v)[1] for v in value if _typed(v)[0] == "value_text"]
        nums = [_typed(v)[1] for v in value if _typed(v)[0] == "value_num"]
        parts = ([TraitValue.value_text.in_(texts)] if texts else []) + \
                ([TraitValue.value_num.in_(nums)] if nums else [])
        return Leaf(key, (or_(false(), *parts),), negated)
    if op in {"within_last", "before_last"}:
        since = iso(now - timedelta(days=_days(value)))
        if op == "within_last":
            return Leaf(key, (TraitValue.value_text >= since,
                              TraitValue.value_text <= iso(now)), negated)
        return Leaf(key, (TraitValue.value_text < since,), negated)
    column, stored = _typed(value)
    col = getattr(TraitValue, column)
    comparison = {"gt": col > stored, "gte": col >= stored,
                  "lt": col < stored, "lte": col <= stored}[op]
    return Leaf(key, (comparison,), negated)


def compile_rule(rule: dict, project_id: int, now: datetime | None = None):
    """SQL boolean expression selecting the customers of ``project_id`` matching ``rule``.

    Correlated EXISTS per customer row: cheap when a page of customers is listed in id
    order, slow for counting a large segment (use ``compile_members`` for that).
    """
    validate(rule)
    now = now or datetime.now(UTC)

    def build(node: dict):
        if "all" in node:
            return and_(true(), *[build(c) for c in node["all"]])
        if "any" in node:
            return or_(false(), *[build(c) for c in node["any"]])
        leaf = _leaf(node, now)
        cond = exists(select(TraitValue.customer_id).where(
            TraitValue.project_id == project_id, TraitValue.customer_id == Customer.id,
            TraitValue.key == leaf.key, *leaf.conds))
        return not_(cond) if leaf.negated else cond

    return build(rule)


def compile_members(rule: dict, project_id: int, now: datetime | None = None):
    """``(positive, select)``: the rule's members as a set of customer ids.

    ``select`` yields each matching ``customer_id`` once; when ``positive`` is False the
    members are the project's customers *not* in it. A condition is an index-only range
    scan of ``trait_values`` (one row per customer and key, so no DISTINCT); ``all`` joins
    them on ``customer_id`` (a merge or hash join), negations become anti-joins (NOT
    EXISTS) and ``any`` a UNION. Counting a segment therefore never visits customers one
    by one. No join with ``customers`` is needed: trait rows are written with their
    customer's own project id (``customers.bulk_set_traits``), and deleted with it.
    """
    validate(rule)
    now = now or datetime.now(UTC)

    def everyone():
        return select(Customer.id.label("customer_id")).where(Customer.project_id == project_id)

    def nobody():
        return select(Customer.id.label("customer_id")).where(false())

    def both(parts: list):
        if len(parts) == 1:
            return parts[0]
        subs = [p.subquery() for p in parts]
        stmt = select(subs[0].c.customer_id).select_from(subs[0])
        for sub in subs[1:]:
            stmt = stmt.join(sub, sub.c.customer_id == subs[0].c.customer_id)
        return stmt

    def either(parts: list):
        if len(parts) == 1:
            return parts[0]
        sub = union(*parts).subquery()  # UNION removes duplicates
        return select(sub.c.customer_id)

    def without(base, removed):
        kept, gone = base.subquery(), removed.subquery()
        return select(kept.c.customer_id).where(~exists(
            select(gone.c.customer_id).where(gone.c.customer_id == kept.c.customer_id)))

    def build(node: dict) -> tuple[bool, Any]:
        if "all" in node or "any" in node:
            children = [build(c) for c in node.get("all", node.get("any"))]
            pos = [s for p, s in children if p]
            neg = [s for p, s in children if not p]
            if "all" in node:
                # A ∩ B ∩ ¬C ∩ ¬D = (A ∩ B) \ (C ∪ D); with no A, B: ¬(C ∪ D)
                if not pos:
                    return (False, either(neg)) if neg else (True, everyone())
                return True, (without(both(pos), either(neg)) if neg else both(pos))
            # A ∪ B ∪ ¬C ∪ ¬D = ¬((C ∩ D) \ (A ∪ B)); with no C, D: A ∪ B
            if not neg:
                return True, (either(pos) if pos else nobody())
            return False, (without(both(neg), either(pos)) if pos else both(neg))
        leaf = _leaf(node, now)
        sel = select(TraitValue.customer_id).where(
            TraitValue.project_id == project_id, TraitValue.key == leaf.key, *leaf.conds)
        return not leaf.negated, sel

    return build(rule)


def evaluate(rule: dict, values: dict[str, Any], now: datetime | None = None) -> bool:
    """Apply ``rule`` to a dict of values (same semantics as ``compile_rule``)."""
    validate(rule)
    now = now or datetime.now(UTC)

    def norm(v: Any) -> Any:
        """The stored, comparable form of a value (None: not comparable)."""
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return float(v)
        if isinstance(v, str):
            return v[:TEXT_LIMIT]
        return None

    def cmp(a: Any, b: Any, op: str) -> bool:
        a, b = norm(a), norm(b)
        if a is None or type(a) is not type(b):
            return False
        return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op]

    def run(node: dict) -> bool:
        if "all" in node:
            return all(run(c) for c in node["all"])
        if "any" in node:
            return any(run(c) for c in node["any"])
        key, op, value = node["trait"], node["op"], node.get("value")
        actual = values.get(key)
        present = actual is not None
        if op == "exists":
            return present
        if op == "not_exists":
            return not present
        stored = norm(actual)
        if op == "eq":
            return stored is not None and stored == norm(value)
        if op == "neq":
            return not (stored is not None and stored == norm(value))
        if op == "in":
            return stored is not None and stored in {norm(v) for v in value}
        if op == "not_in":
            return not (stored is not None and stored in {norm(v) for v in value})
        if op in {"within_last", "before_last"}:
            # dates are ISO text; numbers, booleans and lists have no text to compare
            if not isinstance(actual, str):
                return False
            since = iso(now - timedelta(days=_days(value)))
            return since <= stored <= iso(now) if op == "within_last" else stored < since
        return cmp(actual, value, op)

    return run(rule)
