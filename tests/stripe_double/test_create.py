"""Creating and changing objects, through the API (the SDK) and through the Python API."""

from __future__ import annotations

import time

import pytest
import stripe
from crowdpower_stripe_double import StripeDouble

from tests.stripe_double.conftest import plain


def _types(double: StripeDouble, acct: str) -> list[str]:
    """The account's events, oldest first."""
    return [e["type"] for e in double.objects(acct, "event")]


def test_customers_create_update_delete_over_the_api(
        double: StripeDouble, acct: str, client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(params={"email": "c@shop.test", "name": "Cy",
                                             "metadata": {"plan": "gold"}})
    assert (cus.email, cus.name, cus.metadata.to_dict()) == ("c@shop.test", "Cy",
                                                             {"plan": "gold"})
    updated = client.v1.customers.update(cus.id, params={"name": "Cyril"})
    assert updated.name == "Cyril" and updated.email == "c@shop.test"
    price = double.create_price(acct, 900)
    sub = double.create_subscription(acct, cus.id, price["id"])
    gone = client.v1.customers.delete(cus.id)
    assert gone.deleted is True
    # Deleting a customer cancels its subscriptions, as Stripe does.
    assert client.v1.subscriptions.retrieve(sub["id"]).status == "canceled"
    assert [c["id"] for c in plain(client.v1.customers.list())["data"]] == []
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.delete(cus.id)
    assert caught.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.update(cus.id, params={"name": "Ghost"})
    assert _types(double, acct) == ["customer.created", "customer.updated",
                                    "customer.subscription.created",
                                    "customer.subscription.deleted", "customer.deleted"]


def test_prices_and_subscriptions_over_the_api(
        double: StripeDouble, acct: str, client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(params={"email": "s@shop.test"})
    product = client.v1.products.create(params={"name": "Scale"})
    monthly = client.v1.prices.create(params={"unit_amount": 1000, "currency": "EUR",
                                              "product": product.id,
                                              "recurring": {"interval": "month"}})
    yearly = client.v1.prices.create(params={"unit_amount": 10000, "currency": "eur",
                                             "product": product.id,
                                             "recurring": {"interval": "year",
                                                           "interval_count": 1}})
    assert (monthly.currency, monthly.product, yearly.recurring.interval) == (
        "eur", product.id, "year")
    sub = client.v1.subscriptions.create(params={"customer": cus.id, "trial_period_days": 7,
                                                 "items": [{"price": monthly.id}]})
    assert sub.status == "trialing"
    assert sub.trial_end - sub.trial_start == 7 * 86400
    assert sub["items"].data[0].current_period_end == sub.trial_end
    changed = client.v1.subscriptions.update(sub.id, params={
        "cancel_at_period_end": True,
        "items": [{"id": sub["items"].data[0].id, "price": yearly.id, "quantity": 4}]})
    item = changed["items"].data[0]
    assert (changed.cancel_at_period_end, item.price.id, item.quantity) == (True, yearly.id, 4)
    assert changed.cancel_at == item.current_period_end
    canceled = client.v1.subscriptions.cancel(sub.id)
    assert canceled.status == "canceled" and canceled.canceled_at is not None
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.create(params={"customer": cus.id,
                                               "items": [{"price": "price_missing"}]})
    assert caught.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.create(params={"customer": cus.id})
    assert caught.value.http_status == 400
    assert _types(double, acct)[-3:] == ["customer.subscription.created",
                                         "customer.subscription.updated",
                                         "customer.subscription.deleted"]


def test_update_with_unknown_price_changes_nothing(double: StripeDouble, acct: str,
                                                   client: stripe.StripeClient) -> None:
    cus = double.create_customer(acct, email="u@shop.test")
    price = double.create_price(acct, 900)
    sub = double.create_subscription(acct, cus["id"], price["id"])
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.update(sub["id"], params={
            "cancel_at_period_end": True, "items": [{"price": "price_missing"}]})
    assert client.v1.subscriptions.retrieve(sub["id"]).cancel_at_period_end is False
    assert _types(double, acct)[-1] == "customer.subscription.created"


def test_charges_and_refunds_over_the_api(double: StripeDouble, acct: str,
                                          client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(params={"email": "r@shop.test"})
    charge = client.v1.charges.create(params={"amount": 2000, "currency": "gbp",
                                              "customer": cus.id})
    assert (charge.status, charge.currency, charge.customer) == ("succeeded", "gbp", cus.id)
    first = client.v1.refunds.create(params={"charge": charge.id, "amount": 500})
    rest = client.v1.refunds.create(params={"charge": charge.id})
    assert (first.amount, rest.amount) == (500, 1500)
    got = client.v1.charges.retrieve(charge.id)
    assert (got.amount_refunded, got.refunded) == (2000, True)
    assert [r.id for r in got.refunds.data] == [first.id, rest.id]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"charge": charge.id, "amount": 1})
    assert caught.value.http_status == 400
    assert _types(double, acct)[-3:] == ["charge.succeeded", "charge.refunded",
                                         "charge.refunded"]


def test_python_api_objects_are_served_over_http(double: StripeDouble, acct: str,
                                                 client: stripe.StripeClient) -> None:
    now = int(time.time())
    cus = double.create_customer(acct, email="py@shop.test", name="Py", created=now - 100,
                                 metadata={"k": "v"}, currency="usd")
    price = double.create_price(acct, 300, "usd", interval="week", product_name="Weekly",
                                nickname="Weekly plan")
    trial = double.create_subscription(acct, cus["id"], price["id"], trial_days=14)
    assert trial["status"] == "trialing" and trial["trial_end"] > now
    sub = double.create_subscription(acct, cus["id"], price["id"], quantity=3)
    double.update_subscription(acct, sub["id"], status="past_due")
    double.cancel_subscription(acct, trial["id"], at_period_end=True)
    failed = double.create_charge(acct, cus["id"], 300, status="failed")
    assert (failed["failure_code"], failed["failure_message"]) == (
        "card_declined", "Your card was declined.")
    assert failed["paid"] is False and failed["outcome"]["type"] == "issuer_declined"
    ok = double.create_charge(acct, cus["id"], 900)
    double.refund_charge(acct, ok["id"], 400)
    pending = double.create_charge(acct, cus["id"], 100, status="pending")
    with pytest.raises(ValueError):
        double.refund_charge(acct, failed["id"])
    with pytest.raises(ValueError):
        double.create_charge(acct, cus["id"], 100, status="weird")

    got = client.v1.subscriptions.retrieve(sub["id"])
    assert (got.status, got["items"].data[0].quantity) == ("past_due", 3)
    assert got["items"].data[0].price.recurring.interval == "week"
    assert client.v1.subscriptions.retrieve(trial["id"]).cancel_at_period_end is True
    charges = {c.id: c for c in client.v1.charges.list(params={"customer": cus["id"]}).data}
    assert set(charges) == {failed["id"], ok["id"], pending["id"]}
    assert charges[ok["id"]].amount_refunded == 400
    assert client.v1.customers.retrieve(cus["id"]).metadata.to_dict() == {"k": "v"}
    assert {c["id"] for c in double.objects(acct, "charge")} == set(charges)
    assert _types(double, acct) == [
        "customer.created", "customer.subscription.created", "customer.subscription.created",
        "customer.subscription.updated", "customer.subscription.updated", "charge.failed",
        "charge.succeeded", "charge.refunded"]  # a pending charge emits nothing yet


def test_python_api_raises_for_unknown_objects(double: StripeDouble, acct: str) -> None:
    with pytest.raises(LookupError):
        double.create_subscription(acct, "cus_missing", "price_missing")
    with pytest.raises(LookupError):
        double.update_customer(acct, "cus_missing", name="x")
    with pytest.raises(LookupError):
        double.create_customer("acct_missing", email="x@y.test")
    with pytest.raises(AttributeError):
        double.not_a_method  # noqa: B018


def test_customer_update_merges_metadata_and_empty_string_unsets(
        double: StripeDouble, acct: str, client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(params={"email": "m@shop.test", "name": "Mo",
                                             "metadata": {"a": "1", "b": "2"}})
    got = client.v1.customers.update(cus.id, params={"metadata": {"b": "", "c": "3"},
                                                     "name": "Moe"})
    assert got.metadata.to_dict() == {"a": "1", "c": "3"}
    assert got.name == "Moe" and got.email == "m@shop.test"
    (event,) = [e for e in double.objects(acct, "event") if e["type"] == "customer.updated"]
    previous = event["data"]["previous_attributes"]
    assert set(previous) == {"metadata", "name"} and previous["name"] == "Mo"
    # CustomerUpdateParams types ``name`` as ``str`` (no ``Literal['']``): it cannot be unset.
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.update(cus.id, params={"name": ""})
    assert caught.value.code == "parameter_invalid_empty" and caught.value.param == "name"
    digits = client.v1.customers.create(params={"metadata": {"1": "x", "2": "y"}})
    assert digits.metadata.to_dict() == {"1": "x", "2": "y"}  # not mistaken for a list


def test_a_subscription_ends_once(double: StripeDouble, acct: str,
                                  client: stripe.StripeClient) -> None:
    cus = double.create_customer(acct, email="end@shop.test")
    price = double.create_price(acct, 900)
    sub = double.create_subscription(acct, cus["id"], price["id"])
    client.v1.subscriptions.cancel(sub["id"])
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.cancel(sub["id"])
    assert caught.value.http_status == 400
    with pytest.raises(ValueError):
        double.cancel_subscription(acct, sub["id"])
    # Ending it by status (as a period end would) is announced as ``deleted`` too.
    other = double.create_subscription(acct, cus["id"], price["id"])
    ended = double.update_subscription(acct, other["id"], status="canceled")
    assert ended["canceled_at"] is not None and ended["ended_at"] is not None
    assert _types(double, acct)[-4:] == [
        "customer.subscription.created", "customer.subscription.deleted",
        "customer.subscription.created", "customer.subscription.deleted"]
