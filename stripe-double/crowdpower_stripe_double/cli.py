"""``crowdpower stripe-double``: run the double on its own, or fire events at a running one."""

from __future__ import annotations

import json
import time

import click
import requests

from crowdpower_stripe_double import StripeDouble


@click.group("stripe-double")
def stripe_double() -> None:
    """The Stripe double (a loopback fake Stripe)."""


@stripe_double.command("serve")
@click.option("--port", default=12111, show_default=True)
@click.option("--secret-key", default="sk_test_double", show_default=True)
@click.option("--client-id", default="ca_double", show_default=True)
@click.option("--test-secret-key", default=None,
              help="The platform's test-mode key (Stripe App test-mode installs).")
@click.option("--token-ttl", default=3600.0, show_default=True,
              help="Seconds a Stripe App access token lives.")
@click.option("--webhook-url", default=None, help="Where to POST Connect webhooks.")
@click.option("--webhook-secret", multiple=True, help="Signing secret(s) (repeat to rotate).")
@click.option("--customers", default=0, show_default=True, help="Seed one account with these.")
@click.option("--seed", default=1, show_default=True)
@click.option("--cases/--no-cases", default=True, show_default=True,
              help="Also seed one customer per awkward real-world shape (tiered, metered, "
                   "JPY/BHD, discounts, captures, disputes, guests…).")
def serve(port: int, secret_key: str, client_id: str, test_secret_key: str | None,
          token_ttl: float, webhook_url: str | None, webhook_secret: tuple[str, ...],
          customers: int, seed: int, cases: bool) -> None:
    """Serve the double until Ctrl-C."""
    double = StripeDouble(secret_key, client_id, webhook_url, list(webhook_secret),
                          test_secret_key=test_secret_key)
    double.apps.access_token_ttl = token_ttl
    url = double.start(port=port)
    if customers:
        account = double.create_account()
        counts = double.seed(account, customers, seed)
        if cases:
            counts["cases"] = len(double.seed_cases(account))
        double.oauth_next_account = account
        click.echo(f"seeded {account}: {json.dumps(counts)}")
    click.echo(f"Stripe double on {url} (control page {url}/_double/)")
    click.echo("Stripe App install links: STRIPE_APP_AUTHORIZE_URL="
               f"{url}/oauth/v2/chnlink_double/authorize?client_id={double.apps.live_client_id}"
               " STRIPE_APP_TEST_AUTHORIZE_URL="
               f"{url}/oauth/v2/test/chnlink_double/authorize?client_id="
               f"{double.apps.test_client_id}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        double.stop()


@stripe_double.command("simulate")
@click.argument("action")
@click.option("--account", required=True, help="The connected account (acct_…).")
@click.option("--email", default=None)
@click.option("--customer", default=None, help="cus_… id (instead of --email).")
@click.option("--amount", type=int, default=None, help="Charge amount in cents.")
@click.option("--url", default="http://127.0.0.1:12111", show_default=True)
def simulate(action: str, account: str, email: str | None, customer: str | None,
             amount: int | None, url: str) -> None:
    """Fire ACTION (charge_failed, charge_succeeded, subscription_deleted, …) for a customer."""
    response = requests.post(f"{url}/_double/api/simulate", timeout=10, json={
        "account": account, "action": action, "email": email, "customer": customer,
        "amount": amount})
    click.echo(response.text)
    if response.status_code != 200:
        raise SystemExit(1)
