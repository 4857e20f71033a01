"""The control page, its JSON API and the ``crowdpower stripe-double`` CLI."""

from __future__ import annotations

import re

import requests
from click.testing import CliRunner
from crowdpower_stripe_double import StripeDouble
from crowdpower_stripe_double.cli import stripe_double

from tests.stripe_double.conftest import Receiver


def test_control_page_renders_accounts_and_deliveries(
        double: StripeDouble, base_url: str, acct: str, receiver: Receiver) -> None:
    double.seed(acct, customers=20, seed=1)
    double.create_customer(acct, email="<b>shown@shop.test</b>")
    double.webhooks.flush()
    page = requests.get(f"{base_url}/_double/", timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    html = page.text
    assert "<h1>Stripe double</h1>" in html and acct in html
    assert "customer.created" in html  # the deliveries table
    assert "&lt;b&gt;shown@shop.test&lt;/b&gt;" in html and "<b>shown" not in html
    assert receiver.url in html


def test_control_page_form_fires_an_event(double: StripeDouble, base_url: str, acct: str,
                                          receiver: Receiver) -> None:
    cus = double.create_customer(acct, email="form@shop.test", emit=False)
    double.create_charge(acct, cus["id"], 1200, emit=False)
    response = requests.post(f"{base_url}/_double/action", timeout=5, data={
        "do": "simulate", "account": acct, "action": "charge_refunded",
        "email": "FORM@shop.test"})
    assert response.status_code == 200 and "Done: Refund the latest charge for FORM@shop.test" \
        in response.text and "; Stripe event charge.refunded sent." in response.text
    double.webhooks.flush()
    (event,) = receiver.events(acct)
    assert event["type"] == "charge.refunded"
    assert event["data"]["object"]["amount_refunded"] == 1200
    response = requests.post(f"{base_url}/_double/action", timeout=5, data={
        "do": "simulate", "account": acct, "action": "charge_failed",
        "email": "nobody@shop.test"})
    assert re.search(r"<p class=err>No customer nobody@shop.test in this account.</p>",
                     response.text), response.text
    assert "(&#x27;customer&#x27;" not in response.text and "('customer'" not in response.text
    # the form keeps what was typed and chosen, to fire again or fix a typo
    assert 'value="nobody@shop.test"' in response.text
    assert '<option value="charge_failed" selected>' in response.text
    assert f'<option value="{acct}" selected>' in response.text


def test_api_simulate_charge_failed_for_an_email(double: StripeDouble, base_url: str,
                                                 acct: str, receiver: Receiver) -> None:
    old = double.create_customer(acct, email="ann@shop.test", emit=False)
    cus = double.create_customer(acct, email="Ann@Shop.test", emit=False)
    price = double.create_price(acct, 4900, "eur")
    double.create_subscription(acct, cus["id"], price["id"], emit=False)
    response = requests.post(f"{base_url}/_double/api/simulate", timeout=5, json={
        "account": acct, "action": "charge_failed", "email": "ann@shop.test"})
    assert response.status_code == 200
    result = response.json()
    assert result["event"] == "charge.failed"
    double.webhooks.flush()
    (event,) = receiver.events(acct)
    charge = event["data"]["object"]
    assert event["type"] == "charge.failed" and charge["id"] == result["charge"]
    assert charge["customer"] == cus["id"] != old["id"]  # the newest with that email
    assert (charge["amount"], charge["currency"], charge["status"]) == (4900, "eur", "failed")
    assert charge["failure_code"] == "insufficient_funds"


def test_api_simulate_every_action(double: StripeDouble, base_url: str, acct: str,
                                   receiver: Receiver) -> None:
    cus = double.create_customer(acct, email="all@shop.test", emit=False)
    expected = {
        "subscription_created": "customer.subscription.created",
        "charge_succeeded": "charge.succeeded",
        "charge_refunded": "charge.refunded",
        "subscription_updated": "customer.subscription.updated",
        "subscription_past_due": "customer.subscription.updated",
        "trial_will_end": "customer.subscription.trial_will_end",
        "invoice_upcoming": "invoice.upcoming",
        "subscription_deleted": "customer.subscription.deleted",
        "customer_created": "customer.created",
    }
    for action, type_ in expected.items():
        response = requests.post(f"{base_url}/_double/api/simulate", timeout=5, json={
            "account": acct, "action": action, "customer": cus["id"]})
        assert response.status_code == 200, (action, response.text)
        assert response.json()["event"] == type_
    double.webhooks.flush()
    assert receiver.types(acct) == list(expected.values())
    for bad in ({"account": acct, "action": "explode", "customer": cus["id"]},
                {"account": acct, "action": "subscription_deleted", "customer": cus["id"]},
                {"account": "acct_missing", "action": "charge_failed"},
                {"action": "charge_failed"}):
        response = requests.post(f"{base_url}/_double/api/simulate", json=bad, timeout=5)
        assert response.status_code == 400 and response.json()["error"], bad


def test_api_seed_and_accounts(double: StripeDouble, base_url: str) -> None:
    seeded = requests.post(f"{base_url}/_double/api/seed", timeout=10,
                           json={"customers": 30, "seed": 4, "livemode": True}).json()
    assert seeded["customers"] == 30 and seeded["account"].startswith("acct_")
    accounts = requests.post(f"{base_url}/_double/api/accounts", timeout=5).json()
    mine = next(a for a in accounts if a["id"] == seeded["account"])
    assert mine == {"id": seeded["account"], "livemode": True, "connected": True,
                    "customers": 30}
    assert requests.post(f"{base_url}/_double/api/nope", timeout=5).status_code == 404


def test_cli_simulate_against_a_running_double(double: StripeDouble, base_url: str,
                                               acct: str, receiver: Receiver) -> None:
    cus = double.create_customer(acct, email="cli@shop.test", emit=False)
    runner = CliRunner()
    result = runner.invoke(stripe_double, ["simulate", "charge_failed", "--account", acct,
                                           "--email", "cli@shop.test", "--amount", "1234",
                                           "--url", base_url])
    assert result.exit_code == 0, result.output
    assert '"event": "charge.failed"' in result.output
    double.webhooks.flush()
    (event,) = receiver.events(acct)
    assert event["type"] == "charge.failed"
    assert (event["data"]["object"]["customer"], event["data"]["object"]["amount"]) == (
        cus["id"], 1234)
    failed = runner.invoke(stripe_double, ["simulate", "charge_failed", "--account", acct,
                                           "--email", "ghost@shop.test", "--url", base_url])
    assert failed.exit_code == 1 and "ghost@shop.test" in failed.output


def test_api_simulate_lifecycle_actions(double: StripeDouble, base_url: str, acct: str,
                                        receiver: Receiver) -> None:
    """Each lifecycle action drives the objects as Stripe would, one or more events."""
    cus = double.create_customer(acct, email="life@shop.test", emit=False)
    double.create_price(acct, 2000, "usd", product_name="Base")
    steps = [
        ("trial_started", ["customer.subscription.created"]),
        ("trial_converted", ["customer.subscription.updated"]),
        ("subscription_upgraded", ["customer.subscription.updated"]),
        ("subscription_downgraded", ["customer.subscription.updated"]),
        ("payment_recovered", ["charge.failed", "charge.succeeded"]),
        ("customer_churned", ["customer.subscription.deleted"]),
        ("subscription_reactivated", ["customer.subscription.created"]),
    ]
    for action, _types in steps:
        response = requests.post(f"{base_url}/_double/api/simulate", timeout=10, json={
            "account": acct, "action": action, "customer": cus["id"]})
        assert response.status_code == 200, (action, response.text)
    double.webhooks.flush()
    assert receiver.types(acct) == [t for _a, types in steps for t in types]
    core = double.state.account(acct)
    live = [s for s in core.subscriptions.items if s["customer"] == cus["id"]
            and s["status"] == "active"]
    price = core.prices.get(live[0]["items"][0]["price"])
    assert len(live) == 1 and price["unit_amount"] == 2000  # 2000 → 4000 → 2000, then back
    nothing = requests.post(f"{base_url}/_double/api/simulate", timeout=5, json={
        "account": acct, "action": "subscription_reactivated", "customer": cus["id"]})
    assert nothing.status_code == 400 and "nothing to reactivate" in nothing.json()["error"]
