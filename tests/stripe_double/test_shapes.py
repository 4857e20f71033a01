"""Objects come back in Stripe's current shapes (key sets of Stripe's own fixtures)."""

from __future__ import annotations

import stripe
from crowdpower_stripe_double import StripeDouble

from tests.stripe_double.conftest import FIXTURES, plain


def keys(kind: str) -> set[str]:
    return set(FIXTURES[kind])


def _catalogue(client: stripe.StripeClient) -> tuple[dict, dict, dict]:
    cus = plain(client.v1.customers.create(params={"email": "ann@shop.test", "name": "Ann"}))
    price = plain(client.v1.prices.create(params={
        "unit_amount": 2900, "currency": "usd", "recurring": {"interval": "month"},
        "product_data": {"name": "Pro"}, "nickname": "Pro monthly"}))
    sub = plain(client.v1.subscriptions.create(params={
        "customer": cus["id"], "items": [{"price": price["id"], "quantity": 2}]}))
    return cus, price, sub


def test_customer_has_stripes_shape(client: stripe.StripeClient) -> None:
    cus, _, _ = _catalogue(client)
    got = plain(client.v1.customers.retrieve(cus["id"]))
    assert set(got) == keys("customer")
    assert got["object"] == "customer" and got["id"].startswith("cus_")
    assert (got["email"], got["name"], got["livemode"]) == ("ann@shop.test", "Ann", False)
    assert isinstance(got["created"], int)


def test_subscription_has_items_with_price_and_period_on_items(
        client: stripe.StripeClient) -> None:
    cus, price, sub = _catalogue(client)
    got = plain(client.v1.subscriptions.retrieve(sub["id"]))
    assert set(got) == keys("subscription")
    # Since API 2025-03-31 the current period lives on the items, not the subscription.
    assert "current_period_end" not in got and "current_period_start" not in got
    assert got["customer"] == cus["id"] and got["status"] == "active"
    envelope = got["items"]
    assert set(FIXTURES["subscription"]["items"]) <= set(envelope)
    assert envelope["object"] == "list" and envelope["has_more"] is False
    (item,) = envelope["data"]
    assert set(item) == keys("subscription_item")
    assert item["quantity"] == 2 and item["subscription"] == sub["id"]
    assert item["current_period_end"] > item["current_period_start"] >= got["created"]
    assert set(item["price"]) == keys("price")
    assert item["price"]["id"] == price["id"]
    assert item["price"]["product"] == price["product"]  # not expanded unless asked
    assert item["price"]["recurring"] == {"interval": "month", "interval_count": 1,
                                          "meter": None, "usage_type": "licensed",
                                          "trial_period_days": None}
    assert item["plan"]["object"] == "plan" and item["plan"]["amount"] == 2900


def test_charge_and_refund_have_stripes_shape(client: stripe.StripeClient) -> None:
    cus, _, _ = _catalogue(client)
    charge = plain(client.v1.charges.create(params={"amount": 1000, "currency": "usd",
                                                    "customer": cus["id"]}))
    assert set(charge) == keys("charge")
    assert (charge["status"], charge["paid"], charge["amount_captured"]) == (
        "succeeded", True, 1000)
    refund = plain(client.v1.refunds.create(params={"charge": charge["id"], "amount": 300}))
    assert set(refund) == keys("refund")
    assert (refund["object"], refund["charge"], refund["amount"]) == ("refund", charge["id"], 300)
    assert refund["customer"] == cus["id"]
    got = plain(client.v1.charges.retrieve(charge["id"]))
    assert set(got) == keys("charge")
    assert (got["amount_refunded"], got["refunded"]) == (300, False)
    assert set(FIXTURES["charge"]["refunds"]) <= set(got["refunds"])
    assert [r["id"] for r in got["refunds"]["data"]] == [refund["id"]]
    assert set(got["refunds"]["data"][0]) == keys("refund")


def test_price_and_product_have_stripes_shape(client: stripe.StripeClient) -> None:
    _, price, _ = _catalogue(client)
    got = plain(client.v1.prices.retrieve(price["id"]))
    assert set(got) == keys("price")
    assert (got["unit_amount"], got["unit_amount_decimal"], got["type"]) == (
        2900, "2900", "recurring")
    product = plain(client.v1.products.retrieve(got["product"]))
    assert set(product) == keys("product")
    assert product["name"] == "Pro"
    expanded = plain(client.v1.prices.retrieve(price["id"], params={"expand": ["product"]}))
    assert set(expanded["product"]) == keys("product")


def test_event_has_stripes_shape_plus_account(client: stripe.StripeClient, acct: str) -> None:
    cus, _, _ = _catalogue(client)
    events = plain(client.v1.events.list(params={"type": "customer.created"}))["data"]
    (event,) = events
    assert set(event) == keys("event") | {"account"}
    assert event["account"] == acct
    assert event["api_version"] == stripe.api_version
    assert event["data"]["object"]["id"] == cus["id"]
    assert set(event["data"]["object"]) == keys("customer")
    assert plain(client.v1.events.retrieve(event["id"])) == event


def test_deleted_customer_and_account_shapes(client: stripe.StripeClient, acct: str) -> None:
    cus, _, _ = _catalogue(client)
    deleted = plain(client.v1.customers.delete(cus["id"]))
    assert set(deleted) == keys("deleted_customer") and deleted["deleted"] is True
    assert plain(client.v1.customers.retrieve(cus["id"])) == deleted
    account = plain(client.raw_request("get", "/v1/account", stripe_account=acct))
    assert set(account) == keys("account") and account["id"] == acct


def test_upcoming_invoice_has_stripes_shape(double: StripeDouble, acct: str) -> None:
    cus = double.create_customer(acct, email="inv@shop.test")
    price = double.create_price(acct, 1500, "eur")
    sub = double.create_subscription(acct, cus["id"], price["id"], quantity=3)
    event = double.invoice_upcoming(acct, sub["id"])
    invoice = event["data"]["object"]
    assert set(invoice) == keys("invoice")
    assert invoice["id"] is None  # a preview has no id yet
    assert (invoice["amount_due"], invoice["currency"]) == (4500, "eur")
    assert invoice["parent"]["subscription_details"]["subscription"] == sub["id"]
