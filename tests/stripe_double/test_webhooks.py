"""Signed Connect webhooks: every change's event, signatures, and misbehaviour on demand."""

from __future__ import annotations

import threading
import time

import pytest
import stripe
from crowdpower_stripe_double import StripeDouble, sign

from tests.stripe_double.conftest import CLIENT_ID, Receiver


@pytest.fixture
def shop(double: StripeDouble, acct: str) -> dict:
    """A customer with a price (no events of their own are left for the test to see)."""
    cus = double.create_customer(acct, email="ann@shop.test", name="Ann", emit=False)
    price = double.create_price(acct, 2900, "usd", product_name="Pro")
    return {"cus": cus, "price": price}


def test_every_change_emits_its_event(double: StripeDouble, acct: str, receiver: Receiver,
                                      shop: dict) -> None:
    cus, price = shop["cus"], shop["price"]
    other = double.create_price(acct, 9900, "usd", product_name="Team")
    double.update_customer(acct, cus["id"], name="Ann B")
    sub = double.create_subscription(acct, cus["id"], price["id"], trial_days=10)
    double.trial_will_end(acct, sub["id"])
    double.update_subscription(acct, sub["id"], status="active")
    double.update_subscription(acct, sub["id"], price=other["id"], quantity=2)
    double.invoice_upcoming(acct, sub["id"])
    ok = double.create_charge(acct, cus["id"], 1000)
    double.create_charge(acct, cus["id"], 1000, status="failed",
                         failure_message="Your card has insufficient funds.")
    double.refund_charge(acct, ok["id"], 300)
    double.refund_charge(acct, ok["id"])
    double.cancel_subscription(acct, sub["id"])
    newcomer = double.create_customer(acct, email="new@shop.test")
    double.delete_customer(acct, newcomer["id"])
    double.deauthorize(acct, CLIENT_ID)
    double.webhooks.flush()

    events = receiver.events(acct)
    assert [e["type"] for e in events] == [
        "customer.updated", "customer.subscription.created",
        "customer.subscription.trial_will_end", "customer.subscription.updated",
        "customer.subscription.updated", "invoice.upcoming", "charge.succeeded",
        "charge.failed", "charge.refunded", "charge.refunded",
        "customer.subscription.deleted", "customer.created", "customer.deleted",
        "account.application.deauthorized"]
    for e in events:
        assert (e["account"], e["livemode"], e["api_version"]) == (acct, False,
                                                                   stripe.api_version)
        assert e["object"] == "event" and e["id"].startswith("evt_")
    by = {}
    for e in events:
        by.setdefault(e["type"], []).append(e)
    assert by["customer.updated"][0]["data"]["previous_attributes"] == {"name": "Ann"}
    became_active, replanned = by["customer.subscription.updated"]
    assert became_active["data"]["previous_attributes"] == {"status": "trialing"}
    assert became_active["data"]["object"]["status"] == "active"
    old_item = replanned["data"]["previous_attributes"]["items"]["data"][0]
    new_item = replanned["data"]["object"]["items"]["data"][0]
    assert (old_item["price"]["id"], old_item["quantity"]) == (price["id"], 1)
    assert (new_item["price"]["id"], new_item["quantity"]) == (other["id"], 2)
    assert by["invoice.upcoming"][0]["data"]["object"]["amount_due"] == 19800
    failed = by["charge.failed"][0]["data"]["object"]
    assert (failed["status"], failed["failure_code"], failed["failure_message"]) == (
        "failed", "card_declined", "Your card has insufficient funds.")
    partial, full = by["charge.refunded"]
    assert (partial["data"]["object"]["amount_refunded"],
            partial["data"]["object"]["refunded"]) == (300, False)
    assert partial["data"]["previous_attributes"]["amount_refunded"] == 0
    assert (full["data"]["object"]["amount_refunded"], full["data"]["object"]["refunded"]) == (
        1000, True)
    assert full["data"]["previous_attributes"]["amount_refunded"] == 300
    assert "previous_attributes" not in by["customer.subscription.deleted"][0]["data"]
    assert by["customer.subscription.deleted"][0]["data"]["object"]["status"] == "canceled"
    assert by["customer.deleted"][0]["data"]["object"]["id"] == newcomer["id"]
    assert by["account.application.deauthorized"][0]["data"]["object"]["id"] == CLIENT_ID


def test_events_of_a_live_account_say_livemode(double: StripeDouble, receiver: Receiver
                                               ) -> None:
    live = double.create_account(livemode=True)
    cus = double.create_customer(live, email="live@shop.test")
    double.webhooks.flush()
    (event,) = receiver.events(live)
    assert event["livemode"] is True and event["data"]["object"]["livemode"] is True
    assert event["data"]["object"]["id"] == cus["id"]


def test_signature_verifies_with_each_secret_during_rotation(
        double: StripeDouble, acct: str, receiver: Receiver, shop: dict) -> None:
    double.webhooks.configure(url=receiver.url, secrets=["whsec_old", "whsec_new"])
    double.create_charge(acct, shop["cus"]["id"], 500)
    double.webhooks.flush()
    (delivery,) = [d for d in receiver.received if d.event.get("account") == acct]
    header = delivery.headers["Stripe-Signature"]
    assert header.count("v1=") == 2 and header.startswith("t=")
    assert delivery.headers["Content-Type"].startswith("application/json")
    for secret in ("whsec_old", "whsec_new"):
        event = stripe.Webhook.construct_event(delivery.body.decode(), header, secret)
        assert event.type == "charge.succeeded"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(delivery.body.decode(), header, "whsec_other")
    # One secret: one v1, and ``sign`` is the very same scheme.
    t = int(header.split(",")[0][2:])
    assert sign(delivery.body, ["whsec_old", "whsec_new"], t) == header


def test_drop_next_then_resend_delivers_the_same_body(
        double: StripeDouble, acct: str, receiver: Receiver, shop: dict) -> None:
    double.webhooks.drop_next(1)
    dropped = double.create_charge(acct, shop["cus"]["id"], 700)
    kept = double.create_charge(acct, shop["cus"]["id"], 800)
    double.webhooks.flush()
    ids = [e["data"]["object"]["id"] for e in receiver.events(acct)]
    assert ids == [kept["id"]]
    (event_id,) = [e["event_id"] for e in double.webhooks.delivered()
                   if e["error"] == "dropped on purpose"]
    double.webhooks.resend(event_id)
    double.webhooks.flush()
    (resent,) = receiver.of(event_id)
    assert resent.event["data"]["object"]["id"] == dropped["id"]
    stored = stripe.StripeClient("sk_test_double_suite", stripe_account=acct,
                                 base_addresses={"api": double.test_base_url})
    assert stored.v1.events.retrieve(event_id).id == event_id
    # Resending a delivered event sends the identical bytes again (fresh signature).
    first = receiver.of(receiver.events(acct)[0]["id"])[0]
    double.webhooks.resend(first.event["id"])
    double.webhooks.flush()
    again = receiver.of(first.event["id"])
    assert len(again) == 2 and again[1].body == again[0].body
    with pytest.raises(KeyError):
        double.webhooks.resend("evt_unknown")


def test_duplicate_next_delivers_twice(double: StripeDouble, acct: str, receiver: Receiver,
                                       shop: dict) -> None:
    double.webhooks.duplicate_next(1)
    double.create_charge(acct, shop["cus"]["id"], 700)
    double.create_charge(acct, shop["cus"]["id"], 800)
    double.webhooks.flush()
    events = receiver.events(acct)
    assert len(events) == 3
    assert events[0]["id"] == events[1]["id"] != events[2]["id"]
    twins = receiver.of(events[0]["id"])
    assert twins[0].body == twins[1].body


def test_hold_and_release_in_reverse(double: StripeDouble, acct: str, receiver: Receiver,
                                     shop: dict) -> None:
    double.webhooks.hold()
    made = [double.create_charge(acct, shop["cus"]["id"], 100 + i)["id"] for i in range(3)]
    double.webhooks.flush()  # held deliveries are not waited for
    assert receiver.events(acct) == []
    order = double.webhooks.release("reverse")
    double.webhooks.flush()
    events = receiver.events(acct)
    assert [e["id"] for e in events] == order
    assert [e["data"]["object"]["id"] for e in events] == made[::-1]
    # Released: new events flow again at once.
    double.create_charge(acct, shop["cus"]["id"], 999)
    double.webhooks.flush()
    assert len(receiver.events(acct)) == 4


def test_delay_holds_each_delivery_back(double: StripeDouble, acct: str, receiver: Receiver,
                                        shop: dict) -> None:
    double.webhooks.configure(url=receiver.url, secrets=["whsec_one"], delay=0.3)
    started = time.monotonic()
    double.create_charge(acct, shop["cus"]["id"], 100)
    with pytest.raises(TimeoutError):
        double.webhooks.flush(timeout=0.05)
    double.webhooks.flush()
    (delivery,) = [d for d in receiver.received if d.event.get("account") == acct]
    assert delivery.at - started >= 0.29


def test_failed_delivery_is_retried_without_holding_others_back(
        double: StripeDouble, acct: str, receiver: Receiver, shop: dict) -> None:
    double.webhooks.configure(url=receiver.url, secrets=["whsec_one"], retry_delay=0.3)
    receiver.statuses.extend([500])
    first = double.create_charge(acct, shop["cus"]["id"], 100)
    deadline = time.monotonic() + 5
    while not double.webhooks.delivered(type_="charge.succeeded"):  # the first try failed
        assert time.monotonic() < deadline
        time.sleep(0.005)
    second = double.create_charge(acct, shop["cus"]["id"], 200)
    double.webhooks.flush()
    objects = [e["data"]["object"]["id"] for e in receiver.events(acct)]
    assert objects == [first["id"], second["id"], first["id"]]
    (event_id,) = {e["id"] for e in receiver.events(acct)
                   if e["data"]["object"]["id"] == first["id"]}
    attempts = double.webhooks.delivered(event_id=event_id)
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, 500), (2, 200)]


def test_gives_up_after_max_attempts(double: StripeDouble, acct: str, receiver: Receiver,
                                     shop: dict) -> None:
    double.webhooks.configure(url=receiver.url, secrets=["whsec_one"], max_attempts=2,
                              retry_delay=0.01)
    receiver.statuses.extend([503, 503, 503])
    double.create_charge(acct, shop["cus"]["id"], 100)
    double.webhooks.flush()
    assert len(receiver.events(acct)) == 2
    assert [a["status"] for a in double.webhooks.delivered(type_="charge.succeeded")] == [
        503, 503]


def test_unreachable_endpoint_is_logged_not_fatal(double: StripeDouble, acct: str,
                                                  shop: dict) -> None:
    double.webhooks.configure(url="http://127.0.0.1:9/nowhere", secrets=["whsec_one"],
                              max_attempts=1)
    double.create_charge(acct, shop["cus"]["id"], 100)
    double.webhooks.flush()
    (attempt,) = double.webhooks.delivered(type_="charge.succeeded")
    assert attempt["status"] is None and "ConnectionError" in attempt["error"]


def test_no_url_records_events_without_sending(double: StripeDouble, acct: str,
                                               shop: dict) -> None:
    double.create_charge(acct, shop["cus"]["id"], 100)
    double.webhooks.flush()
    assert double.webhooks.delivered() == []
    assert double.objects(acct, "event")[-1]["type"] == "charge.succeeded"


def test_reconfiguring_drops_retries_of_a_delivery_in_flight(
        double: StripeDouble, acct: str, receiver: Receiver, shop: dict) -> None:
    receiver.gate = threading.Event()
    receiver.statuses.append(500)
    double.create_charge(acct, shop["cus"]["id"], 100)
    deadline = time.monotonic() + 5
    while not receiver.events(acct):  # the delivery is in flight, its answer held back
        assert time.monotonic() < deadline
        time.sleep(0.005)
    double.webhooks.configure(url=receiver.url, secrets=["whsec_one"], retry_delay=0.01)
    receiver.gate.set()  # now it fails: under the old settings, so no retry
    double.webhooks.flush()
    time.sleep(0.05)
    double.webhooks.flush()
    assert len(receiver.events(acct)) == 1
