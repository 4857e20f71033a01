"""The rule language: a table of rules run on the test database (SQLite or PostgreSQL).

Each rule's expected members are written out, and three evaluators must agree with
them: the EXISTS form (member lists), the set form (counts) and the Python evaluator
(automation conditions). Another project's customer always matches but never appears.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from crowdpower import segments
from crowdpower.customers import get_traits
from crowdpower.extensions import db
from crowdpower.models import Customer, Segment
from crowdpower.rules import RuleError, compile_members, compile_rule, evaluate, iso, validate
from crowdpower.tenancy import project_scope

NOW = datetime.now(UTC).replace(microsecond=0)


def ago(days: float) -> str:
    return iso(NOW - timedelta(days=days))


PEOPLE = {
    "ann": {"plan": "pro", "mrr": 100, "vip": True, "signup": ago(5), "tags": ["a", "b"],
            "code": "A1"},
    "bob": {"plan": "basic", "mrr": 10, "vip": False, "signup": ago(40)},
    "cat": {"plan": "Pro", "mrr": 10.5, "signup": ago(400), "code": "10"},
    "dan": {"plan": "enterprise", "mrr": 0, "vip": True,
            "signup": (NOW - timedelta(days=20)).date().isoformat()},  # a date, no time
    "eve": {},
    "fay": {"mrr": -5, "vip": "true", "code": 10},  # a string "true"; a numeric code
    "gus": {"plan": "pro", "signup": ago(-3)},  # in the future
    "hal": {"plan": "basic", "mrr": 1, "signup": "not a date"},
}
EVERYONE = set(PEOPLE)
# in another project, matching almost everything: must never be counted
STRANGER = {"plan": "pro", "mrr": 100, "vip": True, "signup": ago(1), "code": "10",
            "tags": ["a"]}


def c(trait: str, op: str, value=None) -> dict:
    node = {"trait": trait, "op": op}
    if value is not None:
        node["value"] = value
    return node


CASES = [
    ("eq text", c("plan", "eq", "pro"), {"ann", "gus"}),
    ("eq is case-sensitive", c("plan", "eq", "Pro"), {"cat"}),
    ("neq includes missing", c("plan", "neq", "pro"), EVERYONE - {"ann", "gus"}),
    ("in text", c("plan", "in", ["pro", "basic"]), {"ann", "bob", "gus", "hal"}),
    ("not_in text", c("plan", "not_in", ["pro", "basic"]), {"cat", "dan", "eve", "fay"}),
    ("in empty list", c("plan", "in", []), set()),
    ("not_in empty list", c("plan", "not_in", []), EVERYONE),
    ("exists", c("vip", "exists"), {"ann", "bob", "dan", "fay"}),
    ("not_exists", c("vip", "not_exists"), {"cat", "eve", "gus", "hal"}),
    # booleans are stored as the text "true"/"false", so the string "true" equals true
    ("eq true", c("vip", "eq", True), {"ann", "dan", "fay"}),
    ("eq false", c("vip", "eq", False), {"bob"}),
    ("neq true", c("vip", "neq", True), {"bob", "cat", "eve", "gus", "hal"}),
    ("eq number", c("mrr", "eq", 10), {"bob"}),
    ("eq float", c("mrr", "eq", 10.5), {"cat"}),
    ("gt number", c("mrr", "gt", 10), {"ann", "cat"}),
    ("gte number", c("mrr", "gte", 10), {"ann", "bob", "cat"}),
    ("lt number", c("mrr", "lt", 10), {"dan", "fay", "hal"}),
    ("lte zero", c("mrr", "lte", 0), {"dan", "fay"}),
    ("in numbers", c("mrr", "in", [10, 100]), {"ann", "bob"}),
    ("not_in numbers", c("mrr", "not_in", [10, 100]), EVERYONE - {"ann", "bob"}),
    ("string is not number", c("code", "eq", "10"), {"cat"}),
    ("number is not string", c("code", "eq", 10), {"fay"}),
    ("in mixed types", c("code", "in", ["10", 10]), {"cat", "fay"}),
    ("gt text", c("code", "gt", "1"), {"ann", "cat"}),
    ("within_last days object", c("signup", "within_last", {"days": 30}), {"ann", "dan"}),
    ("within_last plain number", c("signup", "within_last", 30), {"ann", "dan"}),
    ("within_last short", c("signup", "within_last", {"days": 6}), {"ann"}),
    ("before_last", c("signup", "before_last", {"days": 30}), {"bob", "cat"}),
    ("before_last on numbers", c("mrr", "before_last", {"days": 30}), set()),
    ("within_last on booleans", c("vip", "within_last", {"days": 3650}), set()),
    ("gt date text", c("signup", "gt", ago(10)), {"ann", "gus", "hal"}),
    ("lt now", c("signup", "lt", iso(NOW)), {"ann", "bob", "cat", "dan"}),
    ("list trait never equals", c("tags", "eq", "a"), set()),
    ("list trait exists", c("tags", "exists"), {"ann"}),
    ("list trait neq", c("tags", "neq", "a"), EVERYONE),
    ("empty all", {"all": []}, EVERYONE),
    ("empty any", {"any": []}, set()),
    ("any of empty all", {"any": [{"all": []}]}, EVERYONE),
    ("all of empty any", {"all": [{"any": []}]}, set()),
    ("all", {"all": [c("plan", "eq", "pro"), c("vip", "exists")]}, {"ann"}),
    ("any", {"any": [c("plan", "eq", "basic"), c("mrr", "gt", 50)]}, {"ann", "bob", "hal"}),
    ("all of any and negative",
     {"all": [{"any": [c("plan", "eq", "pro"), c("plan", "eq", "Pro")]},
              c("vip", "not_exists")]}, {"cat", "gus"}),
    ("any of negatives", {"any": [c("plan", "not_exists"), c("vip", "eq", False)]},
     {"bob", "eve", "fay"}),
    ("all of negatives", {"all": [c("plan", "neq", "pro"), c("plan", "neq", "basic")]},
     {"cat", "dan", "eve", "fay"}),
    ("any of negative and positive", {"any": [c("plan", "neq", "pro"), c("mrr", "eq", 100)]},
     EVERYONE - {"gus"}),
    ("all of not_exists", {"all": [c("vip", "not_exists"), c("plan", "not_exists")]},
     {"eve"}),
    ("mixed three", {"all": [c("plan", "exists"), c("plan", "not_in", ["pro"]),
                             c("mrr", "lt", 50)]}, {"bob", "cat", "dan", "hal"}),
    ("deep nesting", {"all": [{"any": [{"all": [{"any": [c("plan", "eq", "pro")]}]}]}]},
     {"ann", "gus"}),
    ("any of alls",
     {"any": [{"all": [c("plan", "eq", "pro"), c("signup", "within_last", {"days": 30})]},
              {"all": [c("plan", "eq", "basic"), c("signup", "before_last", {"days": 30})]}]},
     {"ann", "bob"}),
    ("negated group inside any",
     {"any": [{"all": [c("vip", "not_exists"), c("mrr", "exists")]}, c("code", "eq", 10)]},
     {"cat", "fay", "hal"}),
]


@pytest.fixture
def people(app, make_project, add_customer):
    """The table's customers in one project and a stranger in another: names → ids."""
    project_id, _ = make_project("Rules")
    other, _ = make_project("Other")
    ids = {name: add_customer(project_id, None if name == "hal" else f"{name}@example.com",
                              traits, name=name)
           for name, traits in PEOPLE.items()}
    add_customer(other, "zed@example.com", STRANGER)
    return project_id, ids


def names_of(ids: dict[str, int], customer_ids) -> set[str]:
    by_id = {v: k for k, v in ids.items()}
    return {by_id[i] for i in customer_ids}


def exists_members(project_id: int, rule: dict) -> set[int]:
    with project_scope(project_id):
        return set(db.session.scalars(select(Customer.id).where(
            Customer.project_id == project_id, compile_rule(rule, project_id, NOW))))


def set_members(project_id: int, rule: dict) -> set[int]:
    positive, members = compile_members(rule, project_id, NOW)
    with project_scope(project_id):
        found = set(db.session.scalars(members))
        if positive:
            return found
        return set(db.session.scalars(select(Customer.id))) - found


def reference_members(project_id: int, ids: dict[str, int], rule: dict) -> set[int]:
    traits = get_traits(project_id, list(ids.values()))
    return {cid for cid in ids.values() if evaluate(rule, traits[cid], NOW)}


def test_rule_members_agree_everywhere(people):
    """All cases against one data set (one database setup keeps the suite fast); every
    disagreement is reported, by case name and evaluator."""
    project_id, ids = people
    assert len({name for name, _, _ in CASES}) == len(CASES)
    problems = []
    for name, rule, expected in CASES:
        validate(rule)
        found = {
            "Python": names_of(ids, reference_members(project_id, ids, rule)),
            "EXISTS form": names_of(ids, exists_members(project_id, rule)),
            "set form": names_of(ids, set_members(project_id, rule)),
        }
        for evaluator, members in found.items():
            if members != expected:
                problems.append(f"{name} [{evaluator}]: got {sorted(members)}, "
                                f"expected {sorted(expected)}")
        counted = segments.count_rule(project_id, rule, NOW)
        if counted != len(expected):
            problems.append(f"{name} [count]: got {counted}, expected {len(expected)}")
    assert not problems, "\n".join(problems)


def test_saved_segments_count_and_list_the_same_members(people, client, make_project):
    project_id, ids = people
    rule = {"any": [c("plan", "neq", "pro"), c("mrr", "eq", 100)]}
    with project_scope(project_id):
        segment = segments.create(project_id, "Mostly", rule)
        db.session.commit()
        listed = set(db.session.scalars(select(Customer.id).where(
            Customer.project_id == project_id, segments.condition(segment))))
    assert names_of(ids, listed) == EVERYONE - {"gus"}
    assert segments.count(segment) == len(EVERYONE) - 1
    assert [(s.name, n) for s, n in segments.with_counts(project_id)] == [("Mostly", 7)]


def test_a_segment_without_rules_is_everyone(people):
    project_id, ids = people
    with project_scope(project_id):
        segment = Segment(project_id=project_id, name="All", rules={})
        db.session.add(segment)
        db.session.commit()
    assert segments.count(segment) == len(PEOPLE)


@pytest.mark.parametrize(("rule", "message"), [
    ([], "must be a JSON object"),
    ("plan = pro", "must be a JSON object"),
    ({"all": "nope"}, "must be a list"),
    ({"all": [], "any": []}, "nothing else"),
    ({"all": [], "trait": "x"}, "nothing else"),
    ({"op": "eq", "value": 1}, "needs a 'trait'"),
    ({"trait": "", "op": "eq", "value": 1}, "needs a 'trait'"),
    ({"trait": "plan", "op": "like", "value": "p%"}, "unknown operator 'like'"),
    ({"trait": "plan", "op": ["eq"], "value": "pro"}, "unknown operator"),
    ({"trait": "plan", "op": "eq"}, "'eq' needs a string, number or boolean"),
    ({"trait": "plan", "op": "neq", "value": {"a": 1}}, "'neq' needs"),
    ({"trait": "plan", "op": "in", "value": "pro"}, "'in' needs a list"),
    ({"trait": "plan", "op": "not_in", "value": ["pro", None]}, "'not_in' needs a list"),
    ({"trait": "mrr", "op": "gt", "value": True}, "'gt' needs a number or a date"),
    ({"trait": "mrr", "op": "lte"}, "'lte' needs a number or a date"),
    ({"trait": "mrr", "op": "gt", "value": float("nan")}, "'gt' needs"),
    ({"trait": "d", "op": "within_last", "value": {"days": -1}}, "non-negative number"),
    ({"trait": "d", "op": "within_last", "value": "30"}, "non-negative number"),
    ({"trait": "d", "op": "before_last", "value": {"weeks": 2}}, "non-negative number"),
    ({"trait": "d", "op": "before_last", "value": {"days": float("inf")}}, "non-negative"),
    ({"trait": "d", "op": "within_last", "value": 10 ** 9}, "at most"),
    ({"all": [{"any": [{"all": [{"any": [{"all": [{"any": [{"all": []}]}]}]}]}]}]},
     "nested too deeply"),
])
def test_invalid_rules_say_what_is_wrong(rule, message):
    with pytest.raises(RuleError, match=message.replace("(", r"\(")):
        validate(rule)
    with pytest.raises(RuleError):
        compile_members(rule, 1)
    with pytest.raises(RuleError):
        evaluate(rule, {})


@pytest.mark.parametrize("rule", [
    c("mrr", "eq", 10), c("mrr", "gt", 5), c("mrr", "gte", 5.5), c("mrr", "lt", 50),
    c("mrr", "lte", 0), c("mrr", "in", [1, 10]), c("mrr", "not_in", [100]),
], ids=lambda rule: rule["op"])
def test_number_conditions_are_answered_by_the_number_index(people, rule):
    """The number index holds numbers only (``value_num IS NOT NULL``, migration
    0008_host_traits_idx); a number condition must imply that, or counting would fall
    back to reading every trait row of the project."""
    project_id, _ids = people
    _positive, members = compile_members(rule, project_id, NOW)
    sql = str(members.compile(db.engine, compile_kwargs={"literal_binds": True}))
    with project_scope(project_id):
        if db.engine.dialect.name == "postgresql":
            db.session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = db.session.execute(text("EXPLAIN " + sql)).scalars().all()
        else:
            plan = [row[-1] for row in db.session.execute(text("EXPLAIN QUERY PLAN " + sql))]
        db.session.rollback()
    assert any("ix_trait_values_num" in line for line in plan), plan
