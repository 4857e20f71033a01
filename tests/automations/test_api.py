"""REST API: automations CRUD, validation (templates checked in the sandbox), messages."""

from __future__ import annotations

from tests.automations.conftest import DUNNING, create_automation, customer, event, messages
from tests.conftest import api

ESCAPES = ["{{ ''.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}",
           "{{ customer.__class__ }}", "{{ 'x'|attr('__class__') }}",
           "{{ customer.traits.update({'a': 1}) }}", "{{ 'a' * 100000000 }}"]


def _body(**fields) -> dict:
    return {"name": "Dunning", "trigger": "Stripe Charge Failed", "subject": DUNNING["subject"],
            "html": DUNNING["html"], "text": DUNNING["text"], **fields}


def test_create_get_list_and_update(project, client):
    _pid, key = project
    created = create_automation(client, key, conditions={
        "event": {"all": [{"property": "amount", "op": "gt", "value": 0}]}}, delay_seconds=60)
    assert created["enabled"] is True and created["action"] == "email"
    assert created["conditions"] == {  # "property" is stored in the rule language's form
        "event": {"all": [{"trait": "amount", "op": "gt", "value": 0}]}}
    assert set(created) >= {"id", "name", "trigger", "conditions", "segment_id", "delay_seconds",
                            "action", "subject", "html", "text", "webhook_url", "webhook_body",
                            "enabled", "template_key", "created_at", "updated_at"}
    one = api(client, key).get(f"/api/v1/automations/{created['id']}")
    assert one.status_code == 200 and one.json == created
    patched = api(client, key).patch(f"/api/v1/automations/{created['id']}",
                                     json={"enabled": False, "name": "Dunning v2"})
    assert patched.status_code == 200
    assert (patched.json["enabled"], patched.json["name"], patched.json["delay_seconds"]) == (
        False, "Dunning v2", 60)
    bad = api(client, key).patch(f"/api/v1/automations/{created['id']}",
                                 json={"html": "{{ customer.__class__ }}"})
    assert bad.status_code == 400 and bad.json["error"]["code"] == "invalid_template"
    assert api(client, key).get(f"/api/v1/automations/{created['id']}").json["html"] == \
        DUNNING["html"]


def test_list_pagination(project, client):
    _pid, key = project
    ids = [create_automation(client, key, name=f"A{i}")["id"] for i in range(3)]
    page = api(client, key).get("/api/v1/automations?limit=2").json
    assert [a["id"] for a in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    rest = api(client, key).get(f"/api/v1/automations?limit=2&starting_after={ids[1]}").json
    assert [a["id"] for a in rest["data"]] == [ids[0]] and rest["has_more"] is False
    assert api(client, key).get("/api/v1/automations?limit=500").status_code == 400


def test_sandbox_escapes_rejected_at_save(project, client):
    _pid, key = project
    for source in ESCAPES:
        for field in ("subject", "html", "text"):
            r = api(client, key).post("/api/v1/automations", json=_body(**{field: source}))
            assert r.status_code == 400, (source, field, r.json)
            assert r.json["error"]["code"] == "invalid_template"
            assert r.json["error"]["message"].startswith(f"{field}: ")
    assert api(client, key).get("/api/v1/automations").json["data"] == []


INVALID = [
    ({"name": ""}, "invalid_name"),
    ({"trigger": None}, "invalid_trigger"),
    ({"html": "{% if %}"}, "invalid_template"),
    ({"subject": ""}, "invalid_subject"),
    ({"html": "", "text": ""}, "invalid_html"),
    ({"delay_seconds": -1}, "invalid_delay_seconds"),
    ({"delay_seconds": "5"}, "invalid_delay_seconds"),
    ({"action": "sms"}, "invalid_action"),
    ({"action": "webhook", "webhook_url": "ftp://x"}, "invalid_webhook_url"),
    ({"action": "webhook", "webhook_url": "http://h/", "webhook_body": "{{ customer.email }}"},
     "invalid_template"),
    ({"conditions": {"traits": {"trait": "x", "op": "like"}}}, "invalid_conditions"),
    ({"conditions": {"sometimes": {}}}, "invalid_conditions"),
    ({"segment_id": 999999}, "invalid_segment_id"),
    ({"enabled": "yes"}, "invalid_enabled"),
    ({"colour": "red"}, "unknown_field"),
]


def test_validation_errors(project, client):
    _pid, key = project
    for fields, code in INVALID:
        r = api(client, key).post("/api/v1/automations", json=_body(**fields))
        assert r.status_code == 400, (fields, r.json)
        assert r.json["error"]["code"] == code and r.json["error"]["message"], fields


def test_auth_and_json_errors(project, client):
    assert client.get("/api/v1/automations").status_code == 401
    assert client.get("/api/v1/messages").json["error"]["code"] == "unauthorized"
    _pid, key = project
    r = api(client, key).post("/api/v1/automations", data="nope",
                              content_type="application/json")
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_json"


def test_messages_list_and_filters(project, client, smtp, drain):
    pid, key = project
    automation = create_automation(client, key)
    ann, bob = customer(pid, "ann@example.com"), customer(pid, "bob@example.com")
    event(pid, ann)
    event(pid, bob)
    drain()
    everyone = messages(client, key)
    assert [m["customer_id"] for m in everyone] == [bob, ann]
    assert [m["customer_id"] for m in messages(client, key, customer_id=ann)] == [ann]
    assert len(messages(client, key, automation_id=automation["id"], state="sent")) == 2
    assert messages(client, key, state="failed") == []
    one = api(client, key).get(f"/api/v1/messages/{everyone[0]['id']}")
    assert one.status_code == 200 and one.json == everyone[0]
    page = api(client, key).get("/api/v1/messages?limit=1").json
    assert page["has_more"] is True and len(page["data"]) == 1


def test_other_projects_objects_are_404(project, other_project, client, smtp, drain):
    pid, key = project
    _opid, other_key = other_project
    automation = create_automation(client, key)
    cid = customer(pid)
    event(pid, cid)
    drain()
    [message] = messages(client, key)
    theirs = api(client, other_key)
    assert theirs.get(f"/api/v1/automations/{automation['id']}").status_code == 404
    r = theirs.patch(f"/api/v1/automations/{automation['id']}", json={"enabled": False})
    assert r.status_code == 404 and r.json["error"]["code"] == "not_found"
    assert theirs.get(f"/api/v1/messages/{message['id']}").status_code == 404
    assert theirs.get(f"/api/v1/messages?customer_id={cid}").status_code == 404
    assert theirs.get(f"/api/v1/messages?automation_id={automation['id']}").status_code == 404
    assert theirs.get("/api/v1/automations").json == {"data": [], "has_more": False}
    assert theirs.get("/api/v1/messages").json == {"data": [], "has_more": False}
    assert theirs.get("/api/v1/automation-settings").json == {"frequency_cap_hours": None}
    assert api(client, key).get(f"/api/v1/automations/{automation['id']}").json["enabled"]
