"""Recovered revenue per automation: a dunning email, then the payment goes through."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from crowdpower.automations.models import Conversion, Message
from crowdpower.extensions import db
from crowdpower.models import utcnow
from crowdpower.plugins.stripe.automation_templates import STRIPE_TEMPLATES
from crowdpower.tenancy import project_scope
from tests.conftest import api
from tests.stripe_plugin.test_webhooks import events

DUNNING = next(t for t in STRIPE_TEMPLATES if t["key"] == "stripe_dunning")


@pytest.fixture
def shop(wired, tenant, connect_account):
    project_id, key, browser = tenant
    double = wired.double
    account = double.create_account()
    connect_account(project_id, account)
    ann = double.create_customer(account, email="ann@example.com", name="Ann")
    pro = double.create_price(account, 2900, "usd", product_name="Pro")
    sub = double.create_subscription(account, ann["id"], pro["id"])
    wired.settle()
    return project_id, key, browser, account, ann, sub


def automation(client, key: str, **fields) -> dict:
    body = {"name": "Dunning", "trigger": DUNNING["trigger"], "subject": DUNNING["subject"],
            "html": DUNNING["html"], "text": DUNNING["text"], **fields}
    response = api(client, key).post("/api/v1/automations", json=body)
    assert response.status_code == 201, response.json
    return response.json


def conversions(project_id: int) -> list[Conversion]:
    db.session.expire_all()
    with project_scope(project_id):
        return list(db.session.scalars(select(Conversion).where(
            Conversion.project_id == project_id).order_by(Conversion.id)))


def stats(client, key: str, automation_id: int) -> dict:
    response = api(client, key).get(f"/api/v1/automations/{automation_id}")
    assert response.status_code == 200
    return response.json["stats"]


def test_a_recovered_payment_is_credited_to_the_dunning_automation(
        wired, shop, client, other_tenant):
    project_id, key, browser, account, ann, _sub = shop
    dunning = automation(client, key)
    assert dunning["conversion_event"] is None and dunning["attribution_window_hours"] == 168
    double = wired.double
    double.create_charge(account, ann["id"], 2900, "usd", status="failed")
    wired.settle()
    [message] = api(client, key).get("/api/v1/messages").json["data"]
    assert message["state"] == "outbox"
    time.sleep(1.1)  # the retry happens after the email (Stripe's times are whole seconds)
    double.webhooks.duplicate_next(2)
    paid = double.create_charge(account, ann["id"], 2900, "usd")
    wired.settle()
    for delivery in double.webhooks.delivered(type_="charge.succeeded"):
        double.webhooks.resend(delivery["event_id"])
    wired.settle()

    [recovered] = events(project_id, "Stripe Payment Recovered")
    assert recovered.properties["charge_id"] == paid["id"]
    [conversion] = conversions(project_id)
    assert (conversion.automation_id, conversion.message_id, conversion.event_id) == (
        dunning["id"], message["id"], recovered.id)
    assert (conversion.amount, conversion.currency) == (29.0, "usd")
    assert stats(client, key, dunning["id"]) == {
        "sent": 1, "conversions": 1, "converted_customers": 1,
        "recovered": [{"currency": "usd", "amount": 29.0}]}
    listed = api(client, key).get("/api/v1/automations").json["data"]
    assert listed[0]["stats"]["recovered"] == [{"currency": "usd", "amount": 29.0}]

    page = browser.get(f"/projects/{project_id}/automations/{dunning['id']}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "automation-stats" in html and "$29.00" in html
    index = browser.get(f"/projects/{project_id}/automations").get_data(as_text=True)
    assert "1 recovered" in index and "$29.00" in index

    _other_id, other_key, other_browser = other_tenant
    assert api(client, other_key).get(f"/api/v1/automations/{dunning['id']}"
                                      ).status_code == 404
    assert api(client, other_key).get("/api/v1/automations").json["data"] == []
    assert other_browser.get(f"/projects/{project_id}/automations/{dunning['id']}"
                             ).status_code == 404


def test_last_touch_and_a_tenant_chosen_conversion_event(wired, shop, client):
    project_id, key, _browser, account, ann, sub = shop
    dunning = automation(client, key)
    nudge = automation(client, key, name="Past due nudge",
                       trigger="Stripe Subscription Updated",
                       conditions={"event": {"all": [{"property": "status", "op": "eq",
                                                      "value": "past_due"}]}})
    paid_goal = automation(client, key, name="Any payment", trigger="Stripe Charge Failed",
                           conversion_event="Stripe Charge Succeeded")
    double = wired.double
    double.create_charge(account, ann["id"], 2900, "usd", status="failed")
    wired.settle()
    time.sleep(1.1)
    double.update_subscription(account, sub["id"], status="past_due")
    wired.settle()
    time.sleep(1.1)
    double.create_charge(account, ann["id"], 2900, "usd")
    wired.settle()
    by_event = {c.event_name: c.automation_id for c in conversions(project_id)}
    # Payment Recovered: both dunning and the nudge count it; the nudge came last.
    assert by_event == {"Stripe Payment Recovered": nudge["id"],
                        "Stripe Charge Succeeded": paid_goal["id"]}
    assert stats(client, key, dunning["id"])["converted_customers"] == 0
    assert stats(client, key, nudge["id"])["recovered"] == [{"currency": "usd",
                                                             "amount": 29.0}]


def test_a_conversion_outside_the_window_is_not_credited(wired, shop, client):
    project_id, key, _browser, account, ann, _sub = shop
    dunning = automation(client, key, attribution_window_hours=24)
    double = wired.double
    double.create_charge(account, ann["id"], 2900, "usd", status="failed")
    wired.settle()
    with project_scope(project_id):  # the email went out two days ago
        db.session.execute(update(Message).where(Message.project_id == project_id).values(
            claimed_at=utcnow() - timedelta(days=2)))
        db.session.commit()
    double.create_charge(account, ann["id"], 2900, "usd")
    wired.settle()
    assert len(events(project_id, "Stripe Payment Recovered")) == 1
    assert conversions(project_id) == []
    assert stats(client, key, dunning["id"])["sent"] == 1


def test_a_recovery_before_the_email_went_out_is_not_credited(wired, shop, client):
    project_id, key, _browser, account, ann, _sub = shop
    automation(client, key, delay_seconds=3600)  # the email waits an hour
    double = wired.double
    double.create_charge(account, ann["id"], 2900, "usd", status="failed")
    double.create_charge(account, ann["id"], 2900, "usd")
    wired.settle()
    assert len(events(project_id, "Stripe Payment Recovered")) == 1
    assert conversions(project_id) == []


def test_attribution_settings_are_validated(shop, client):
    _project_id, key, *_ = shop
    for fields, code in (({"conversion_event": 5}, "invalid_conversion_event"),
                         ({"attribution_window_hours": 0}, "invalid_attribution_window_hours"),
                         ({"attribution_window_hours": "7"},
                          "invalid_attribution_window_hours")):
        body = {"name": "x", "trigger": "Stripe Charge Failed", "subject": "s", "text": "t",
                **fields}
        response = api(client, key).post("/api/v1/automations", json=body)
        assert response.status_code == 400 and response.json["error"]["code"] == code
    made = automation(client, key, conversion_event="  Stripe Trial Converted ",
                      attribution_window_hours=48)
    assert made["conversion_event"] == "Stripe Trial Converted"
    patched = api(client, key).patch(f"/api/v1/automations/{made['id']}",
                                     json={"conversion_event": None})
    assert patched.status_code == 200 and patched.json["conversion_event"] is None
    assert patched.json["attribution_window_hours"] == 48
