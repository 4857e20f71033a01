"""Every bad input is a 4xx: rules over budget, hostile strings and numbers, huge ids,
concurrent creates of one name."""

from __future__ import annotations

import threading

import pytest

from crowdpower import rules
from tests.conftest import api


def _rule(n: int) -> dict:
    return {"any": [{"trait": f"t{i}", "op": "eq", "value": i} for i in range(n)]}


def _deep(depth: int) -> dict:
    rule: dict = {"trait": "plan", "op": "exists"}
    for _ in range(depth):
        rule = {"all": [rule]}
    return rule


@pytest.mark.parametrize("rule", [
    _rule(300), _rule(rules.MAX_CONDITIONS + 1), _deep(rules.MAX_DEPTH + 2), _deep(12),
    {"all": [{"trait": "x", "op": "in", "value": list(range(1000))}]},
    {"all": [{"trait": "x" * 101, "op": "exists"}]},
    {"all": [{"trait": "x", "op": "eq", "value": "v" * 10_000}]},
], ids=["300", "max+1", "deep", "very-deep", "long-in", "long-key", "long-value"])
def test_oversized_rules_are_refused_before_saving(project, client, rule):
    _pid, key = project
    r = api(client, key).post("/api/v1/segments", json={"name": "Big", "rules": rule})
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_rules", r.json
    listed = api(client, key).get("/api/v1/segments")
    assert listed.status_code == 200 and listed.json["data"] == []
    r = api(client, key).post("/api/v1/automations", json={
        "name": "A", "trigger": "T", "subject": "s", "text": "t",
        "conditions": {"traits": rule}})
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_conditions"


def test_rule_at_the_limit_is_accepted(project, client):
    _pid, key = project
    r = api(client, key).post("/api/v1/segments", json={
        "name": "Max", "rules": _rule(rules.MAX_CONDITIONS - 1)})
    assert r.status_code == 201, r.json


HOSTILE_BODIES = [
    ('{"email": "a\\u0000@b.c"}', "invalid_email"),
    ('{"email": "\\ud800@b.c"}', "invalid_email"),
    ('{"email": "a@b.c", "traits": {"x": 1e400}}', "invalid_traits"),
    ('{"email": "a@b.c", "traits": {"x": Infinity}}', "invalid_traits"),
    ('{"email": "a@b.c", "traits": {"x": 123456789012345678901234567890}}', "invalid_traits"),
    ('{"email": "a@b.c", "name": "\\udfff"}', "invalid_name"),
    ('{"email": "a@b.c", "traits": {"\\u0000": 1}}', "invalid_traits"),
    ("[" * 5000 + "]" * 5000, "invalid_json"),
    ("\xff\xfe", "invalid_json"),
]


@pytest.mark.parametrize("raw,code", HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
def test_hostile_json_is_a_400(project, client, raw, code):
    _pid, key = project
    r = api(client, key).post("/api/v1/customers", data=raw.encode("utf-8", "surrogatepass"),
                              content_type="application/json")
    assert r.status_code == 400 and r.json["error"]["code"] == code, r.json


def test_hostile_event_properties_and_settings(project, client):
    _pid, key = project
    cid = api(client, key).post("/api/v1/customers", json={"email": "a@b.c"}).json["id"]
    for raw in ('{"name": "E", "properties": {"p": NaN}}',
                '{"name": "E", "properties": {"p": "\\u0000"}}',
                '{"name": "E\\ud800"}'):
        r = api(client, key).post(f"/api/v1/customers/{cid}/events", data=raw,
                                  content_type="application/json")
        assert r.status_code == 400, (raw, r.json)
    for raw in ('{"frequency_cap_hours": 1e400}', '{"frequency_cap_hours": Infinity}',
                '{"frequency_cap_hours": 99999999999999999999}'):
        r = api(client, key).patch("/api/v1/automation-settings", data=raw,
                                   content_type="application/json")
        assert r.status_code == 400, (raw, r.json)


@pytest.mark.parametrize("path", [
    "/api/v1/customers/2147483648", "/api/v1/customers/99999999999999999999999",
    "/api/v1/customers/-1", "/api/v1/customers/0", "/api/v1/segments/2147483648",
    "/api/v1/automations/9223372036854775808", "/api/v1/messages/4294967296",
    "/api/v1/customers/1%00", "/api/v1/customers/%ED%A0%80",
])
def test_out_of_range_ids_are_404(project, client, path):
    _pid, key = project
    r = api(client, key).get(path)
    assert r.status_code in (400, 404), (path, r.status_code)


@pytest.mark.parametrize("query", [
    "starting_after=2147483648", "starting_after=-5", "starting_after=1e400",
    "limit=99999999999999999999", "email=%00", "segment=2147483648",
    "customer_id=2147483648",
])
def test_out_of_range_query_args_are_4xx(project, client, query):
    _pid, key = project
    for url in ("/api/v1/customers", "/api/v1/messages"):
        r = api(client, key).get(f"{url}?{query}")
        assert r.status_code < 500, (url, query, r.status_code)


def _concurrently(app, n: int, fn) -> list:
    results: list = []
    barrier = threading.Barrier(n)

    def run():
        with app.app_context():
            barrier.wait()
            results.append(fn(app.test_client()))

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_creates_of_one_email_and_one_segment_name(app, project):
    _pid, key = project
    statuses = _concurrently(app, 8, lambda c: api(c, key).post(
        "/api/v1/customers", json={"email": "Race@Example.com"}).status_code)
    assert sorted(statuses).count(201) == 1 and set(statuses) <= {200, 201}, statuses
    statuses = _concurrently(app, 8, lambda c: api(c, key).post(
        "/api/v1/segments", json={"name": "Race", "rules": _rule(1)}).status_code)
    assert statuses.count(201) == 1 and set(statuses) <= {201, 409}, statuses


def test_oversized_bodies_are_413_unread(project, client):
    _pid, key = project
    big = b'{"email": "a@b.c", "name": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    r = api(client, key).post("/api/v1/customers", data=big, content_type="application/json")
    assert r.status_code == 413 and r.json["error"]["code"] == "too_large"
