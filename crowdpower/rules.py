"""The rule language of segments and automation conditions.

A rule is JSON: ``{"all": [cond, ...]}`` or ``{"any": [cond, ...]}`` (nestable), where
a condition is ``{"trait": key, "op": op, "value": v}``. Operators: ``eq``, ``neq``,
``in``, ``not_in``, ``exists``, ``not_exists``, ``gt``, ``gte``, ``lt``, ``lte``,
``within_last`` / ``before_last`` (value ``{"days": N}`` or a number of days; for
date traits). Numbers compare numerically, strings (and ISO dates) as text.

``compile_rule`` turns a rule into a SQL condition on ``Customer`` (so counts run in
the database); ``evaluate`` applies the same rule to a plain dict (automation
conditions on event properties). Both raise ``RuleError`` on malformed input.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, false, not_, or_, select, true

OPS = {"eq", "neq", "in", "not_in", "exists", "not_exists", "gt", "gte", "lt", "lte",
       "within_last", "before_last"}
MAX_DEPTH = 5


class RuleError(ValueError):
    """A rule that cannot be understood; the message says why."""


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _days(value: Any) -> float:
    if isinstance(value, dict):
        value = value.get("days")
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise RuleError("within_last/before_last need a non-negative number of days")
    return float(value)


def validate(rule: Any, depth: int = 0) -> None:
    """Check a rule's shape; raise ``RuleError`` with a readable message."""
    if depth > MAX_DEPTH:
        raise RuleError("rules are nested too deeply")
    if not isinstance(rule, dict):
        raise RuleError("a rule must be a JSON object")
    if "all" in rule or "any" in rule:
        group = rule.get("all", rule.get("any"))
        if not isinstance(group, list):
            raise RuleError("'all'/'any' must be a list of conditions")
        for child in group:
            validate(child, depth + 1)
        return
    key, op = rule.get("trait"), rule.get("op")
    if not isinstance(key, str) or not key:
        raise RuleError("a condition needs a 'trait' name")
    if op not in OPS:
        raise RuleError(f"unknown operator {op!r}; expected one of {sorted(OPS)}")
    value = rule.get("value")
    if op in {"in", "not_in"} and not isinstance(value, list):
        raise RuleError(f"'{op}' needs a list value")
    if op in {"within_last", "before_last"}:
        _days(value)
    if op in {"gt", "gte", "lt", "lte"} and (
        isinstance(value, bool) or not isinstance(value, int | float | str)
    ):
        raise RuleError(f"'{op}' needs a number or a date string")


def _typed(value: Any):
    """(column name, stored form) for a literal compared with trait values."""
    if isinstance(value, bool):
        return "value_text", "true" if value else "false"
    if isinstance(value, int | float):
        return "value_num", float(value)
    return "value_text", str(value)


def compile_rule(rule: dict, project_id: int, now: datetime | None = None):
    """SQL boolean expression selecting the customers of ``project_id`` matching ``rule``."""
    from crowdpower.models import Customer, TraitValue

    validate(rule)
    now = now or datetime.now(UTC)

    def has(key: str, *conds):
        return exists(
            select(TraitValue.customer_id).where(
                TraitValue.project_id == project_id,
                TraitValue.customer_id == Customer.id,
                TraitValue.key == key,
                *conds,
            )
        )

    def build(node: dict):
        if "all" in node:
            parts = [build(c) for c in node["all"]]
            return and_(true(), *parts)
        if "any" in node:
            parts = [build(c) for c in node["any"]]
            return or_(false(), *parts)
        key, op, value = node["trait"], node["op"], node.get("value")
        if op == "exists":
            return has(key)
        if op == "not_exists":
            return not_(has(key))
        if op in {"eq", "neq"}:
            column, stored = _typed(value)
            cond = has(key, getattr(TraitValue, column) == stored)
            return cond if op == "eq" else not_(cond)
        if op in {"in", "not_in"}:
            texts = [_typed(v)[1] for v in value if _typed(v)[0] == "value_text"]
            nums = [_typed(v)[1] for v in value if _typed(v)[0] == "value_num"]
            cond = has(key, or_(false(), TraitValue.value_text.in_(texts) if texts else false(),
                                TraitValue.value_num.in_(nums) if nums else false()))
            return cond if op == "in" else not_(cond)
        if op in {"within_last", "before_last"}:
            since = iso(now - timedelta(days=_days(value)))
            if op == "within_last":
                return has(key, TraitValue.value_text >= since, TraitValue.value_text <= iso(now))
            return has(key, TraitValue.value_text < since)
        column, stored = _typed(value)
        col = getattr(TraitValue, column)
        comparison = {"gt": col > stored, "gte": col >= stored,
                      "lt": col < stored, "lte": col <= stored}[op]
        return has(key, comparison)

    return build(rule)


def evaluate(rule: dict, values: dict[str, Any], now: datetime | None = None) -> bool:
    """Apply ``rule`` to a dict of values (same semantics as ``compile_rule``)."""
    validate(rule)
    now = now or datetime.now(UTC)

    def norm(v: Any) -> Any:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return float(v)
        return None if v is None else str(v)

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
        present = values.get(key) is not None
        actual = values.get(key)
        if op == "exists":
            return present
        if op == "not_exists":
            return not present
        if op == "eq":
            return present and norm(actual) == norm(value)
        if op == "neq":
            return not (present and norm(actual) == norm(value))
        if op == "in":
            return present and norm(actual) in {norm(v) for v in value}
        if op == "not_in":
            return not (present and norm(actual) in {norm(v) for v in value})
        if op in {"within_last", "before_last"}:
            if not present:
                return False
            since = iso(now - timedelta(days=_days(value)))
            text = str(actual)
            return since <= text <= iso(now) if op == "within_last" else text < since
        return present and cmp(actual, value, op)

    return run(rule)
