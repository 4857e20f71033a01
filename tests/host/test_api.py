"""REST API v1 (CONTRACT.md): auth, customers, events, segments, definitions.

Every route that names an object has a twin: another project's key gets a 404 (or, for
lists, an empty list), never this project's data.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from crowdpower.customers import record_event
from crowdpower.extensions import db
from crowdpower.models import ApiKey, EventDefinition, Segment, TraitDefinition, utcnow
from crowdpower.tenancy import project_scope
from tests.conftest import api


@pytest.fixture
def acme(client, make_project):
    """(project id, API client) of the first project."""
    project_id, key = make_project("Acme")
    return project_id, api(client, key)


@pytest.fixture
def globex(client, make_project):
    """The other project, whose key must never reach the first one's objects."""
    project_id, key = make_project("Globex")
    return project_id, api(client, key)


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and body["error"]["message"]
    return body["error"]["code"]


def add_event(project_id: int, customer_id: int, name: str, when: datetime, **kw):
    with project_scope(project_id):
        event = record_event(project_id, customer_id, name, occurred_at=when, **kw)
        db.session.commit()
        return event.id


# -- auth -------------------------------------------------------------------------------

BAD_HEADERS = [None, "", "Bearer", "Bearer ", "Basic abc", "Bearer cp_not_a_real_key",
               "cp_no_scheme"]


def test_missing_or_bad_key_is_401_json(client, acme):
    for header in BAD_HEADERS:
        headers = {} if header is None else {"Authorization": header}
        for url in ("/api/v1/customers", "/api/v1/segments", "/api/v1/trait-definitions"):
            assert error_of(client.get(url, headers=headers), 401) == "unauthorized", header
        assert error_of(client.post("/api/v1/customers", json={"email": "a@b.c"},
                                    headers=headers), 401) == "unauthorized", header


def test_revoked_key_is_401(client, make_project):
    project_id, key = make_project()
    with project_scope(project_id):
        row = db.session.scalar(db.select(ApiKey).where(ApiKey.project_id == project_id))
        row.revoked_at = utcnow()
        db.session.commit()
    assert error_of(api(client, key).get("/api/v1/customers"), 401) == "unauthorized"


def test_scheme_is_case_insensitive_and_a_session_is_not_enough(client, tenant):
    project_id, key, web = tenant
    assert client.get("/api/v1/customers",
                      headers={"Authorization": f"bearer {key}"}).status_code == 200
    assert error_of(web.get("/api/v1/customers"), 401) == "unauthorized"


def test_unknown_route_and_wrong_method_are_json(acme):
    _pid, a = acme
    assert error_of(a.get("/api/v1/nope"), 404) == "not_found"
    assert error_of(a.delete("/api/v1/customers"), 405) == "method_not_allowed"


# -- customers --------------------------------------------------------------------------

def test_create_then_update_by_email(acme):
    _pid, a = acme
    r = a.post("/api/v1/customers", json={"email": "Ann@Example.com", "name": "Ann",
                                          "traits": {"plan": "pro", "seats": 3}})
    assert r.status_code == 201
    body = r.get_json()
    assert body["email"] == "Ann@Example.com" and body["name"] == "Ann"
    assert body["traits"] == {"plan": "pro", "seats": 3}
    assert body["created_at"].endswith("Z")
    assert set(body) >= {"id", "email", "name", "created_at", "traits"}

    r2 = a.post("/api/v1/customers", json={"email": "ann@example.COM",
                                           "traits": {"seats": 4, "plan": None, "vip": True}})
    assert r2.status_code == 200
    assert r2.get_json()["id"] == body["id"]
    assert r2.get_json()["name"] == "Ann"  # not sent: kept
    assert r2.get_json()["traits"] == {"seats": 4, "vip": True}


INVALID_CUSTOMERS = [
    ({}, "invalid_email"),
    ({"email": "not-an-email"}, "invalid_email"),
    ({"email": 42}, "invalid_email"),
    ({"email": "a@b.c", "name": 7}, "invalid_name"),
    ({"email": "a@b.c", "name": "x" * 301}, "invalid_name"),
    ({"email": "a@b.c", "traits": ["plan"]}, "invalid_traits"),
    ({"email": "a@b.c", "traits": {"": 1}}, "invalid_traits"),
    ({"email": "a@b.c", "traits": {"k" * 101: 1}}, "invalid_traits"),
    ({"email": "a@b.c", "traits": {"nested": {"a": 1}}}, "invalid_traits"),
    ({"email": "a@b.c", "traits": {"list": [1, {"a": 1}]}}, "invalid_traits"),
]


def test_create_customer_validates(acme):
    _pid, a = acme
    for payload, code in INVALID_CUSTOMERS:
        assert error_of(a.post("/api/v1/customers", json=payload), 400) == code, payload
    assert a.get("/api/v1/customers").get_json()["data"] == []


def test_non_finite_numbers_and_non_objects_are_refused(acme):
    _pid, a = acme
    raw = '{"email": "a@b.c", "traits": {"score": NaN}}'
    r = a.post("/api/v1/customers", data=raw, content_type="application/json")
    assert error_of(r, 400) == "invalid_traits"
    assert error_of(a.post("/api/v1/customers", data="[1]", content_type="application/json"),
                    400) == "invalid_json"
    assert error_of(a.post("/api/v1/customers", data="{", content_type="application/json"),
                    400) == "invalid_json"


def test_get_customer(acme, globex):
    _pid, a = acme
    created = a.post("/api/v1/customers", json={"email": "ann@x.io",
                                                "traits": {"plan": "pro"}}).get_json()
    r = a.get(f"/api/v1/customers/{created['id']}")
    assert r.status_code == 200 and r.get_json() == created
    assert error_of(a.get("/api/v1/customers/999999"), 404) == "not_found"
    assert error_of(a.get("/api/v1/customers/abc"), 404) == "not_found"
    # twin: the other project's key
    _gid, g = globex
    assert error_of(g.get(f"/api/v1/customers/{created['id']}"), 404) == "not_found"


def test_same_email_in_another_project_is_another_customer(acme, globex):
    _pid, a = acme
    _gid, g = globex
    mine = a.post("/api/v1/customers", json={"email": "ann@x.io", "name": "Ann"}).get_json()
    r = g.post("/api/v1/customers", json={"email": "ANN@x.io", "name": "Other Ann"})
    assert r.status_code == 201 and r.get_json()["id"] != mine["id"]
    assert a.get(f"/api/v1/customers/{mine['id']}").get_json()["name"] == "Ann"


def test_list_customers_paginates_newest_first(acme, globex):
    _pid, a = acme
    ids = [a.post("/api/v1/customers", json={"email": f"c{i}@x.io"}).get_json()["id"]
           for i in range(5)]
    _gid, g = globex
    g.post("/api/v1/customers", json={"email": "theirs@x.io"})

    page = a.get("/api/v1/customers?limit=2").get_json()
    assert [c["id"] for c in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    page2 = a.get(f"/api/v1/customers?limit=2&starting_after={ids[3]}").get_json()
    assert [c["id"] for c in page2["data"]] == [ids[2], ids[1]] and page2["has_more"] is True
    page3 = a.get(f"/api/v1/customers?limit=2&starting_after={ids[1]}").get_json()
    assert [c["id"] for c in page3["data"]] == [ids[0]] and page3["has_more"] is False
    everything = a.get("/api/v1/customers?limit=100").get_json()
    assert len(everything["data"]) == 5 and everything["has_more"] is False
    assert [c["id"] for c in a.get("/api/v1/customers").get_json()["data"]] == ids[::-1]


def test_bad_pagination_is_400(acme):
    _pid, a = acme
    for query in ("limit=0", "limit=101", "limit=-1", "limit=abc", "limit="):
        assert error_of(a.get(f"/api/v1/customers?{query}"), 400) == "invalid_limit", query
    assert error_of(a.get("/api/v1/customers?starting_after=abc"), 400) == "invalid_cursor"


def test_list_customers_by_email(acme, globex):
    _pid, a = acme
    ann = a.post("/api/v1/customers", json={"email": "Ann@x.io"}).get_json()
    a.post("/api/v1/customers", json={"email": "bob@x.io"})
    found = a.get("/api/v1/customers?email=ANN@X.IO").get_json()["data"]
    assert [c["id"] for c in found] == [ann["id"]]
    _gid, g = globex
    assert g.get("/api/v1/customers?email=ann@x.io").get_json() == {"data": [],
                                                                    "has_more": False}


def test_list_customers_in_a_segment(acme, globex):
    project_id, a = acme
    pro = a.post("/api/v1/customers", json={"email": "p@x.io",
                                            "traits": {"plan": "pro"}}).get_json()
    a.post("/api/v1/customers", json={"email": "b@x.io", "traits": {"plan": "basic"}})
    seg = a.post("/api/v1/segments", json={"name": "Pro", "rules": {
        "all": [{"trait": "plan", "op": "eq", "value": "pro"}]}}).get_json()
    found = a.get(f"/api/v1/customers?segment={seg['id']}").get_json()
    assert [c["id"] for c in found["data"]] == [pro["id"]]
    assert error_of(a.get("/api/v1/customers?segment=999999"), 404) == "not_found"
    _gid, g = globex
    assert error_of(g.get(f"/api/v1/customers?segment={seg['id']}"), 404) == "not_found"


# -- events -----------------------------------------------------------------------------

def test_customer_events_newest_first_with_pagination(acme, globex):
    project_id, a = acme
    cid = a.post("/api/v1/customers", json={"email": "ann@x.io"}).get_json()["id"]
    t = [datetime(2024, 1, d, 12, tzinfo=UTC) for d in (1, 2, 3)]
    old = add_event(project_id, cid, "Old", t[0], properties={"n": 1}, source="stripe")
    new = add_event(project_id, cid, "New", t[2])
    mid = add_event(project_id, cid, "Mid", t[1])

    body = a.get(f"/api/v1/customers/{cid}/events").get_json()
    assert [e["id"] for e in body["data"]] == [new, mid, old] and body["has_more"] is False
    assert body["data"][2] == {"id": old, "name": "Old", "properties": {"n": 1},
                               "occurred_at": "2024-01-01T12:00:00Z", "source": "stripe"}
    first = a.get(f"/api/v1/customers/{cid}/events?limit=2").get_json()
    assert [e["id"] for e in first["data"]] == [new, mid] and first["has_more"] is True
    rest = a.get(f"/api/v1/customers/{cid}/events?limit=2&starting_after={mid}").get_json()
    assert [e["id"] for e in rest["data"]] == [old] and rest["has_more"] is False
    assert error_of(a.get(f"/api/v1/customers/{cid}/events?limit=500"), 400) == "invalid_limit"
    assert error_of(a.get("/api/v1/customers/999999/events"), 404) == "not_found"
    # twin: another project's key, and a cursor that is another customer's event
    _gid, g = globex
    assert error_of(g.get(f"/api/v1/customers/{cid}/events"), 404) == "not_found"
    other = a.post("/api/v1/customers", json={"email": "bob@x.io"}).get_json()["id"]
    assert error_of(a.get(f"/api/v1/customers/{other}/events?starting_after={mid}"),
                    400) == "invalid_cursor"


def test_track_event_is_idempotent_on_external_id(acme, globex):
    _pid, a = acme
    cid = a.post("/api/v1/customers", json={"email": "ann@x.io"}).get_json()["id"]
    url = f"/api/v1/customers/{cid}/events"
    payload = {"name": "Signed Up", "properties": {"plan": "pro"},
               "occurred_at": "2024-05-01T10:00:00+02:00", "external_id": "signup-1"}
    r = a.post(url, json=payload)
    assert r.status_code == 201
    event = r.get_json()
    assert event["occurred_at"] == "2024-05-01T08:00:00Z" and event["source"] == "api"
    again = a.post(url, json=payload)
    assert again.status_code == 200 and again.get_json()["id"] == event["id"]
    assert len(a.get(url).get_json()["data"]) == 1
    assert error_of(a.post(url, json={"properties": {}}), 400) == "invalid_name"
    assert error_of(a.post(url, json={"name": "X", "occurred_at": "yesterday"}),
                    400) == "invalid_occurred_at"
    assert error_of(a.post(url, json={"name": "X", "properties": [1]}),
                    400) == "invalid_properties"
    # twin: the other project cannot add events to this customer; its own external ids
    # are its own
    gid, g = globex
    assert error_of(g.post(url, json=payload), 404) == "not_found"
    theirs = g.post("/api/v1/customers", json={"email": "ann@x.io"}).get_json()["id"]
    assert g.post(f"/api/v1/customers/{theirs}/events", json=payload).status_code == 201


# -- segments ---------------------------------------------------------------------------

def test_segments_with_counts(acme, globex):
    project_id, a = acme
    for i, plan in enumerate(["pro", "pro", "basic"]):
        a.post("/api/v1/customers", json={"email": f"c{i}@x.io", "traits": {"plan": plan}})
    r = a.post("/api/v1/segments", json={"name": "Pro", "description": "Paying more",
                                         "rules": {"all": [{"trait": "plan", "op": "eq",
                                                            "value": "pro"}]}})
    assert r.status_code == 201
    seg = r.get_json()
    assert seg["customer_count"] == 2 and seg["source"] == "custom"
    a.post("/api/v1/segments", json={"name": "Not pro", "rules": {
        "all": [{"trait": "plan", "op": "neq", "value": "pro"}]}})
    body = a.get("/api/v1/segments").get_json()
    assert [(s["name"], s["customer_count"]) for s in body["data"]] == [("Pro", 2),
                                                                        ("Not pro", 1)]
    assert body["has_more"] is False
    one = a.get(f"/api/v1/segments/{seg['id']}").get_json()
    assert one["customer_count"] == 2 and one["description"] == "Paying more"
    assert error_of(a.get("/api/v1/segments/999999"), 404) == "not_found"
    # twin
    _gid, g = globex
    assert error_of(g.get(f"/api/v1/segments/{seg['id']}"), 404) == "not_found"
    assert g.get("/api/v1/segments").get_json()["data"] == []


INVALID_SEGMENTS = [
    ({"name": "X", "rules": {"all": [{"trait": "plan", "op": "like", "value": "p"}]}},
     "unknown operator 'like'"),
    ({"name": "X", "rules": {"trait": "plan", "op": "in", "value": "pro"}}, "needs a list"),
    ({"name": "X", "rules": "plan = pro"}, "must be a JSON object"),
    ({"name": "X"}, "must be a JSON object"),
    ({"name": "", "rules": {"all": []}}, "needs a name"),
    ({"rules": {"all": []}}, "needs a name"),
    ({"name": "X", "rules": {"all": []}, "description": 5}, "description"),
]


def test_invalid_segment_is_a_clear_400(acme):
    _pid, a = acme
    for payload, message in INVALID_SEGMENTS:
        r = a.post("/api/v1/segments", json=payload)
        assert error_of(r, 400) == "invalid_rules", payload
        assert message in r.get_json()["error"]["message"], payload
    assert a.get("/api/v1/segments").get_json()["data"] == []


def test_segment_names_are_unique_per_project(acme, globex):
    _pid, a = acme
    rules = {"all": []}
    assert a.post("/api/v1/segments", json={"name": "All", "rules": rules}).status_code == 201
    assert error_of(a.post("/api/v1/segments", json={"name": "All", "rules": rules}),
                    409) == "segment_exists"
    _gid, g = globex
    assert g.post("/api/v1/segments", json={"name": "All", "rules": rules}).status_code == 201


# -- definitions ------------------------------------------------------------------------

def test_definitions_are_the_projects_own(acme, globex):
    project_id, a = acme
    with project_scope(project_id):
        db.session.add(EventDefinition(project_id=project_id, name="Paid", source="stripe",
                                       description="Money in", properties={"amount": "number"}))
        db.session.add(TraitDefinition(project_id=project_id, key="stripe_mrr", name="MRR",
                                       type="number", source="stripe"))
        db.session.commit()
    events = a.get("/api/v1/event-definitions").get_json()
    assert [(e["name"], e["source"], e["properties"]) for e in events["data"]] == [
        ("Paid", "stripe", {"amount": "number"})]
    traits = a.get("/api/v1/trait-definitions").get_json()["data"]
    assert [(t["key"], t["name"], t["type"], t["source"]) for t in traits] == [
        ("stripe_mrr", "MRR", "number", "stripe")]
    # how it reads, as the installed plugin declares it (money in the currency trait)
    assert (traits[0]["format"], traits[0]["currency_trait"]) == ("money", "stripe_currency")
    # twin: the other project sees none of it
    _gid, g = globex
    assert g.get("/api/v1/event-definitions").get_json()["data"] == []
    assert g.get("/api/v1/trait-definitions").get_json()["data"] == []


def test_traits_set_through_the_api_are_defined_with_their_type(acme, globex):
    _pid, a = acme
    a.post("/api/v1/customers", json={"email": "a@x.io", "traits": {
        "plan": "pro", "seats": 3, "vip": True, "renews_at": "2024-06-01T00:00:00Z",
        "birthday": "1990-02-03", "tags": ["x"], "gone": None}})
    a.post("/api/v1/customers", json={"email": "b@x.io", "traits": {"plan": 5, "extra": 1.5}})
    types = {t["key"]: (t["type"], t["source"])
             for t in a.get("/api/v1/trait-definitions").get_json()["data"]}
    assert types == {"plan": ("string", "api"), "seats": ("number", "api"),
                     "vip": ("boolean", "api"), "renews_at": ("date", "api"),
                     "birthday": ("date", "api"), "tags": ("list", "api"),
                     "extra": ("number", "api")}
    _gid, g = globex
    assert g.get("/api/v1/trait-definitions").get_json()["data"] == []


def test_api_requests_run_in_the_keys_project_scope(acme, globex, app):
    """A forgotten filter would still only see the key's project (the tenancy guard)."""
    project_id, a = acme
    gid, g = globex
    a.post("/api/v1/customers", json={"email": "mine@x.io"})
    g.post("/api/v1/customers", json={"email": "theirs@x.io"})
    with project_scope(gid):
        assert db.session.scalars(db.select(Segment)).all() == []
    emails = [c["email"] for c in g.get("/api/v1/customers").get_json()["data"]]
    assert emails == ["theirs@x.io"]
