"""Who gets a message: conditions, segment, delay with re-check at send time, frequency cap."""

from __future__ import annotations

import time
from datetime import timedelta

from crowdpower.extensions import db
from crowdpower.models import Segment, utcnow
from tests.automations.conftest import (
    create_automation,
    customer,
    event,
    messages,
    set_trait,
    wait_until,
)
from tests.conftest import api

PAST_DUE = {"traits": {"all": [{"trait": "stripe_subscription_status", "op": "eq",
                                "value": "past_due"}]}}


def test_conditions_on_event_properties_and_traits(project, client, smtp, drain):
    pid, key = project
    create_automation(client, key, conditions={
        "event": {"all": [{"property": "amount", "op": "gte", "value": 10}]},
        "traits": {"all": [{"trait": "plan", "op": "eq", "value": "pro"}]}})
    pro = customer(pid, "pro@example.com", plan="pro")
    basic = customer(pid, "basic@example.com", plan="basic")
    event(pid, pro, properties={"amount": 5, "currency": "usd"})       # too small
    event(pid, basic, properties={"amount": 50, "currency": "usd"})    # wrong plan
    wanted = event(pid, pro, properties={"amount": 50, "currency": "usd"})
    drain()
    [row] = messages(client, key)
    assert (row["event_id"], row["state"]) == (wanted, "sent")
    assert [m["To"] for m in smtp.accepted] == ["Ann Lee <pro@example.com>"]
    assert "$50.00" in smtp.accepted[0]["Subject"]


def test_other_event_names_do_not_trigger(project, client, smtp, drain):
    pid, key = project
    create_automation(client, key)
    event(pid, customer(pid), name="Stripe Charge Succeeded")
    drain()
    assert messages(client, key) == [] and smtp.accepted == []


def test_old_events_start_nothing(project, client, smtp, drain):
    """A backfill (an event that happened days ago) must not send today's dunning email."""
    from crowdpower.customers import record_event

    pid, key = project
    create_automation(client, key)
    record_event(pid, customer(pid), "Stripe Charge Failed", {"amount": 1},
                 occurred_at=utcnow() - timedelta(days=30))
    db.session.commit()
    drain()
    assert messages(client, key) == []


def test_delay_is_honoured(project, client, smtp, drain):
    pid, key = project
    create_automation(client, key, delay_seconds=2)
    cid = customer(pid)
    started = time.monotonic()
    event(pid, cid)
    drain()
    [row] = messages(client, key)
    assert row["state"] == "queued" and smtp.accepted == []
    assert wait_until(drain, lambda: smtp.accepted, timeout=10)
    # RQ's scheduler keeps whole seconds, so a 2 s delay may fire up to 1 s early there.
    assert time.monotonic() - started >= 1.0
    [row] = messages(client, key)
    assert row["state"] == "sent"


def test_delayed_message_rechecks_conditions_at_send_time(project, client, smtp, drain):
    pid, key = project
    create_automation(client, key, conditions=PAST_DUE, delay_seconds=2)
    recovered = customer(pid, "recovered@example.com", stripe_subscription_status="past_due")
    still_due = customer(pid, "due@example.com", stripe_subscription_status="past_due")
    event(pid, recovered)
    event(pid, still_due)
    drain()
    assert [m["state"] for m in messages(client, key)] == ["queued", "queued"]
    set_trait(pid, recovered, stripe_subscription_status="active")  # paid during the delay

    def settled():
        rows = messages(client, key)
        return rows if all(m["state"] not in ("queued", "sending") for m in rows) else None

    rows = {m["customer_id"]: m for m in wait_until(drain, settled, timeout=10)}
    assert rows[still_due]["state"] == "sent"
    assert (rows[recovered]["state"], rows[recovered]["reason"]) == (
        "skipped", "trait conditions not met at send time")
    assert [m["To"] for m in smtp.accepted] == ["Ann Lee <due@example.com>"]


def test_segment_filter(project, other_project, client, smtp, drain):
    pid, key = project
    segment = Segment(project_id=pid, name="Pro", rules={
        "all": [{"trait": "plan", "op": "eq", "value": "pro"}]})
    other_segment = Segment(project_id=other_project[0], name="Theirs", rules={"all": []})
    db.session.add_all([segment, other_segment])
    db.session.commit()
    bad = api(client, key).post("/api/v1/automations", json={
        "name": "x", "trigger": "Stripe Charge Failed", "subject": "s", "text": "t",
        "segment_id": other_segment.id})
    assert bad.status_code == 400 and bad.json["error"]["code"] == "invalid_segment_id"
    create_automation(client, key, segment_id=segment.id)
    member = customer(pid, "pro@example.com", plan="pro")
    outsider = customer(pid, "free@example.com", plan="free")
    event(pid, outsider)
    event(pid, member)
    drain()
    assert [m["customer_id"] for m in messages(client, key)] == [member]
    assert [m["To"] for m in smtp.accepted] == ["Ann Lee <pro@example.com>"]


def test_frequency_cap(project, client, smtp, drain):
    pid, key = project
    create_automation(client, key)
    create_automation(client, key, name="Second", trigger="Stripe Invoice Upcoming")
    r = api(client, key).patch("/api/v1/automation-settings", json={"frequency_cap_hours": 24})
    assert r.status_code == 200 and r.json == {"frequency_cap_hours": 24}
    assert api(client, key).patch("/api/v1/automation-settings",
                                  json={"frequency_cap_hours": -3}).status_code == 400
    cid = customer(pid)
    event(pid, cid)
    drain()
    event(pid, cid, name="Stripe Invoice Upcoming", properties={"amount_due": 5})
    drain()
    first, second = reversed(messages(client, key))
    assert first["state"] == "sent" and second["state"] == "skipped"
    assert second["reason"].startswith("frequency cap")
    assert len(smtp.accepted) == 1
    other = customer(pid, "other@example.com")  # the cap is per customer
    event(pid, other)
    drain()
    assert len(smtp.accepted) == 2
