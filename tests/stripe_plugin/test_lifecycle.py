"""Derived lifecycle events, driven through signed webhooks from the double."""

from __future__ import annotations

import time

import pytest
from crowdpower_stripe_double.control import simulate

from tests.stripe_plugin.test_webhooks import customer_by_email, events, inbox


@pytest.fixture
def shop(wired, tenant, connect_account):
    """A connected project; Ann pays 29 usd a month for Pro."""
    project_id, key, _browser = tenant
    double = wired.double
    account = double.create_account()
    connect_account(project_id, account)
    cus = double.create_customer(account, email="ann@example.com", name="Ann")
    price = double.create_price(account, 2900, "usd", product_name="Pro")
    sub = double.create_subscription(account, cus["id"], price["id"])
    wired.settle()
    return project_id, key, account, cus, sub


def fire(wired, account: str, action: str, **kwargs) -> dict:
    result = simulate(wired.double, account, action, email="ann@example.com", **kwargs)
    wired.settle()
    return result


def one(project_id: int, name: str):
    found = events(project_id, name)
    assert len(found) == 1, [e.properties for e in found]
    return found[0]


def test_upgrade_and_downgrade_carry_mrr_and_plan_before_and_after(wired, shop):
    project_id, _key, account, _cus, sub = shop
    fire(wired, account, "subscription_upgraded")
    up = one(project_id, "Stripe Subscription Upgraded")
    assert up.properties["mrr_before"] == 29.0 and up.properties["mrr_after"] == 58.0
    assert up.properties["mrr_change"] == 29.0
    assert (up.properties["plan_before"], up.properties["plan_after"]) == ("Pro", "Plus")
    assert up.properties["currency"] == "usd" and up.properties["subscription_id"] == sub["id"]
    assert up.external_id == up.properties["stripe_event_id"] + ":upgraded"
    assert up.source == "stripe"
    fire(wired, account, "subscription_downgraded")
    down = one(project_id, "Stripe Subscription Downgraded")
    assert (down.properties["mrr_before"], down.properties["mrr_after"]) == (58.0, 29.0)
    assert down.properties["plan_after"] == "Lite"
    # A change that moves no money (cancel at period end) is neither.
    simulate(wired.double, account, "subscription_updated", email="ann@example.com")
    wired.settle()
    assert len(events(project_id, "Stripe Subscription Upgraded")) == 1
    assert len(events(project_id, "Stripe Subscription Downgraded")) == 1


def test_quantity_change_is_an_upgrade(wired, shop):
    project_id, _key, account, _cus, sub = shop
    wired.double.update_subscription(account, sub["id"], quantity=3)
    wired.settle()
    up = one(project_id, "Stripe Subscription Upgraded")
    assert (up.properties["mrr_before"], up.properties["mrr_after"]) == (29.0, 87.0)


def test_trial_started_then_converted(wired, tenant, connect_account):
    project_id = tenant[0]
    double = wired.double
    account = double.create_account()
    connect_account(project_id, account)
    cus = double.create_customer(account, email="ann@example.com")
    double.create_price(account, 4900, "eur", product_name="Team")
    wired.settle()
    simulate(double, account, "trial_started", customer=cus["id"])
    wired.settle()
    started = one(project_id, "Stripe Trial Started")
    assert started.properties["status"] == "trialing" and started.properties["trial_end_at"]
    assert started.properties["plan_after"] == "Team" and started.properties["mrr_after"] == 0
    simulate(double, account, "trial_converted", customer=cus["id"])
    wired.settle()
    converted = one(project_id, "Stripe Trial Converted")
    assert converted.properties["previous_status"] == "trialing"
    assert converted.properties["status"] == "active"
    assert (converted.properties["mrr_before"], converted.properties["mrr_after"]) == (0, 49.0)
    assert converted.properties["currency"] == "eur"
    # A conversion is not also an upgrade.
    assert events(project_id, "Stripe Subscription Upgraded") == []


def test_cancellation_undone_churn_and_comeback(wired, shop):
    project_id, _key, account, _cus, sub = shop
    wired.double.cancel_subscription(account, sub["id"], at_period_end=True)
    wired.settle()
    fire(wired, account, "subscription_reactivated")
    undone = one(project_id, "Stripe Subscription Reactivated")
    assert undone.properties["reason"] == "cancellation_undone"
    assert undone.properties["mrr_after"] == 29.0

    fire(wired, account, "customer_churned")
    churned = one(project_id, "Stripe Customer Churned")
    assert churned.properties["mrr_before"] == 29.0 and churned.properties["mrr_after"] == 0
    assert churned.properties["plan_before"] == "Pro"
    assert churned.properties["reason"] == "cancellation_requested"

    fire(wired, account, "subscription_reactivated")  # resubscribes to the last price
    back = [e for e in events(project_id, "Stripe Subscription Reactivated")
            if e.properties["reason"] == "new_subscription"]
    assert len(back) == 1 and back[0].properties["mrr_after"] == 29.0


def test_ending_one_of_two_subscriptions_is_not_churn(wired, shop):
    project_id, _key, account, cus, sub = shop
    addon = wired.double.create_price(account, 500, "usd", product_name="Add-on")
    wired.double.create_subscription(account, cus["id"], addon["id"])
    wired.settle()
    wired.double.cancel_subscription(account, sub["id"])
    wired.settle()
    assert events(project_id, "Stripe Customer Churned") == []
    assert len(events(project_id, "Stripe Subscription Deleted")) == 1


def test_paused_subscription_resumed_is_reactivated(wired, shop):
    project_id, _key, account, _cus, sub = shop
    wired.double.update_subscription(account, sub["id"], status="paused")
    wired.settle()
    fire(wired, account, "subscription_reactivated")
    resumed = one(project_id, "Stripe Subscription Reactivated")
    assert resumed.properties["reason"] == "resumed"
    assert resumed.properties["previous_status"] == "paused"


def test_payment_recovered_after_a_failure(wired, shop):
    project_id, _key, account, _cus, _sub = shop
    result = fire(wired, account, "payment_recovered")
    recovered = one(project_id, "Stripe Payment Recovered")
    assert recovered.properties["charge_id"] == result["charge"]
    assert recovered.properties["failed_charge_id"] == result["failed_charge"]
    assert recovered.properties["amount"] == 29.0 and recovered.properties["currency"] == "usd"
    assert recovered.properties["failure_code"] == "card_declined"
    assert recovered.external_id == result["failed_charge"] + ":payment_recovered"
    # A later successful charge recovers nothing: no failure since the last success.
    wired.double.create_charge(account, _cus["id"], 2900, "usd")
    wired.settle()
    assert len(events(project_id, "Stripe Payment Recovered")) == 1


def test_a_success_without_a_prior_failure_is_no_recovery(wired, shop):
    project_id, _key, account, cus, _sub = shop
    wired.double.create_charge(account, cus["id"], 2900, "usd")
    wired.settle()
    assert events(project_id, "Stripe Payment Recovered") == []


def test_duplicate_and_resent_deliveries_derive_once(wired, shop):
    project_id, _key, account, _cus, _sub = shop
    wired.double.webhooks.duplicate_next(5)
    fire(wired, account, "subscription_upgraded")
    fire(wired, account, "payment_recovered")
    for delivery in wired.double.webhooks.delivered():
        wired.double.webhooks.resend(delivery["event_id"])
    wired.settle()
    assert len(events(project_id, "Stripe Subscription Upgraded")) == 1
    assert len(events(project_id, "Stripe Payment Recovered")) == 1
    assert {r.status for r in inbox()} <= {"processed", "duplicate", "ignored"}


def test_out_of_order_deliveries_derive_each_change_once(wired, shop):
    project_id, _key, account, cus, _sub = shop
    double = wired.double
    double.webhooks.hold()
    simulate(double, account, "subscription_upgraded", email="ann@example.com")
    time.sleep(1.05)
    simulate(double, account, "subscription_downgraded", email="ann@example.com")
    simulate(double, account, "payment_recovered", email="ann@example.com")
    assert double.webhooks.release("reverse")  # newest first: the success before the failure
    wired.settle()
    up = one(project_id, "Stripe Subscription Upgraded")
    down = one(project_id, "Stripe Subscription Downgraded")
    assert (up.properties["mrr_before"], up.properties["mrr_after"]) == (29.0, 58.0)
    assert (down.properties["mrr_before"], down.properties["mrr_after"]) == (58.0, 29.0)
    recovered = one(project_id, "Stripe Payment Recovered")
    assert recovered.properties["amount"] == 29.0
    ann = customer_by_email(project_id, "ann@example.com")
    assert {e.customer_id for e in events(project_id)} == {ann.id}


def test_derived_events_are_seeded_definitions(wired, shop, client):
    from tests.conftest import api

    _project_id, key, *_ = shop
    names = {d["name"] for d in api(client, key).get("/api/v1/event-definitions").json["data"]}
    assert {"Stripe Trial Started", "Stripe Trial Converted", "Stripe Subscription Upgraded",
            "Stripe Subscription Downgraded", "Stripe Subscription Reactivated",
            "Stripe Customer Churned", "Stripe Payment Recovered"} <= names


def test_the_initial_sync_derives_nothing(wired, tenant, connect_account, client):
    """History imported at connect time is state, not news: no lifecycle events."""
    from crowdpower.plugins.stripe.sync import request_sync
    from tests.conftest import api

    project_id, key, _ = tenant
    double = wired.double
    account = double.create_account()
    cus = double.create_customer(account, email="old@example.com", emit=False)
    price = double.create_price(account, 2900, "usd", product_name="Pro")
    double.create_subscription(account, cus["id"], price["id"], trial_days=7, emit=False)
    ended = double.create_subscription(account, cus["id"], price["id"], emit=False)
    double.update_subscription(account, ended["id"], price=double.create_price(
        account, 9900, "usd")["id"])  # before the connection: delivered nowhere
    double.create_charge(account, cus["id"], 2900, "usd", status="failed", emit=False)
    double.create_charge(account, cus["id"], 2900, "usd", emit=False)
    double.webhooks.flush()  # the update's webhook arrives before the connection: ignored
    connect_account(project_id, account)
    request_sync(project_id, reason="api")
    from crowdpower.extensions import db

    db.session.commit()
    wired.settle()
    status = api(client, key).get("/api/v1/integrations/stripe").json
    assert status["sync"]["state"] == "succeeded"
    assert customer_by_email(project_id, "old@example.com") is not None
    from crowdpower.plugins.stripe.lifecycle import NAMES

    assert [e.name for e in events(project_id) if e.name in NAMES] == []


def test_every_lifecycle_template_saves(tenant):
    """The ready-made automations pass the same validation as a tenant's own."""
    from crowdpower.automations.validation import FIELDS, clean
    from crowdpower.plugins.stripe.lifecycle import NAMES
    from crowdpower.plugins.stripe.lifecycle_templates import LIFECYCLE_TEMPLATES

    project_id = tenant[0]
    assert {t["trigger"] for t in LIFECYCLE_TEMPLATES} <= set(NAMES)
    for template in LIFECYCLE_TEMPLATES:
        values = {f: template[f] for f in FIELDS if f in template}
        cleaned = clean({**values, "name": template["name"]}, project_id)
        assert cleaned["trigger"] == template["trigger"]


def test_lifecycle_events_trigger_the_ready_made_automations(wired, shop, client):
    """A derived event starts automations like any other (here: "Thanks for upgrading")."""
    from crowdpower.plugins.stripe.lifecycle_templates import LIFECYCLE_TEMPLATES
    from tests.conftest import api

    project_id, key, account, _cus, _sub = shop
    template = next(t for t in LIFECYCLE_TEMPLATES if t["key"] == "stripe_upgraded")
    fields = ("trigger", "conditions", "delay_seconds", "action", "subject", "html", "text")
    made = api(client, key).post("/api/v1/automations", json={
        "name": template["name"], **{f: template[f] for f in fields}})
    assert made.status_code == 201, made.json
    fire(wired, account, "subscription_upgraded")
    [message] = api(client, key).get("/api/v1/messages").json["data"]
    assert message["automation_id"] == made.json["id"] and message["state"] == "outbox"
    assert message["subject"] == "You're on Plus" and "$58.00 a month" in message["text"]
    assert message["to"] == "ann@example.com"


def test_a_tiered_seat_increase_is_an_upgrade_by_the_tiers(wired, shop):
    """MRR before and after come from the mapping's tiered pricing (tiers completed from
    the mirrored price, as Stripe leaves them out of a subscription's embedded price)."""
    project_id, _key, account, cus, _sub = shop
    double = wired.double
    seats = double.create_price(account, None, "usd", product_name="Seats",
                                tiers_mode="graduated",
                                tiers=[{"up_to": 5, "unit_amount": 1000},
                                       {"up_to": None, "unit_amount": 500}])
    team = double.create_subscription(account, cus["id"], seats["id"], quantity=3)
    wired.settle()
    double.update_subscription(account, team["id"], quantity=8)
    wired.settle()
    up = one(project_id, "Stripe Subscription Upgraded")
    assert (up.properties["mrr_before"], up.properties["mrr_after"]) == (30.0, 65.0)
    assert up.properties["subscription_id"] == team["id"]
