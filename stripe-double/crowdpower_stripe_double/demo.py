"""``crowdpower demo``: the product and the Stripe double on one machine.

The demo runs the whole product on one machine with no external services: the app
(SQLite, in-process jobs unless REDIS_URL is set), the Stripe double seeded with a
sample account, and a demo project and user.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import click
from crowdpower import create_app
from crowdpower.app import MIGRATIONS_DIR
from crowdpower.cli import add_member, make_project
from crowdpower.extensions import db
from crowdpower.plugins.stripe.automation_templates import STRIPE_TEMPLATES
from flask_migrate import upgrade
from werkzeug.serving import run_simple

from crowdpower_stripe_double.demo_revenue import RevenueStory, account_mrr, seed_history
from crowdpower_stripe_double.server import StripeDouble

DEMO_EMAIL = "demo@crowdpower.test"
DEMO_PASSWORD = "demo-password"


@dataclass
class Demo:
    app: object
    double: object
    account: str
    project_id: int
    api_key: str
    base_url: str
    stripe_url: str
    story: object = None  # the revenue story thread (demo_revenue.RevenueStory)


def prepare_demo(port: int = 5000, stripe_port: int = 0, customers: int = 250,
                 host: str = "127.0.0.1", database_url: str | None = None,
                 instance_dir: str | None = None) -> Demo:
    """Start the Stripe double, build the app pointed at it, and create the demo tenant."""
    base_url = f"http://{host}:{port}"
    webhook_secret = "whsec_demo_" + secrets.token_hex(8)
    double = StripeDouble(secret_key="sk_live_demo_platform", client_id="ca_demo_platform",
                          webhook_url=base_url + "/integrations/stripe/webhook",
                          webhook_secrets=[webhook_secret],
                          test_secret_key="sk_test_demo_platform")
    stripe_url = double.start(port=stripe_port) if stripe_port else double.start()
    account = double.create_account(livemode=False, email="billing@demo-shop.test")
    double.seed(account, customers=customers, seed=42)
    double.seed_cases(account)
    double.oauth_next_account = account
    double.oauth_auto_approve = False

    if database_url is None:
        folder = Path(instance_dir or os.path.join(os.getcwd(), "instance"))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "demo.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        database_url = f"sqlite:///{path}"
    app = create_app({
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "demo-" + secrets.token_hex(16),
        "BASE_URL": base_url,
        "STRIPE_CLIENT_ID": "ca_demo_platform",
        "STRIPE_SECRET_KEY": "sk_live_demo_platform",
        "STRIPE_TEST_SECRET_KEY": "sk_test_demo_platform",
        "STRIPE_CONNECT_MODE": "app",
        # The App's install links, as Stripe's Dashboard shows them (here the double's).
        "STRIPE_APP_AUTHORIZE_URL": f"{stripe_url}/oauth/v2/chnlink_demo/authorize"
                                    f"?client_id={double.apps.live_client_id}",
        "STRIPE_APP_TEST_AUTHORIZE_URL": f"{stripe_url}/oauth/v2/test/chnlink_demo/authorize"
                                         f"?client_id={double.apps.test_client_id}",
        "STRIPE_TEST_WEBHOOK_SECRET": webhook_secret,
        "STRIPE_WEBHOOK_SECRET": webhook_secret,
        "STRIPE_API_BASE": stripe_url,
        "STRIPE_CONNECT_BASE": stripe_url,
        "STRIPE_TEST_REQUESTS_PER_SECOND": 0,
    })
    with app.app_context():
        _create_schema(app)
        project_id, api_key = make_project("Demo Shop")
        add_member(DEMO_EMAIL, DEMO_PASSWORD, project_id)
    add_template_automation(app, api_key, "stripe_dunning")
    with app.app_context():
        # Six months of MRR history, ending near what the seeded account bills today.
        seed_history(project_id, account_mrr(double, account))
    story = RevenueStory(app, double, account, project_id)
    story.start()  # plays a dunning that recovers money, once the tenant has synced
    return Demo(app, double, account, project_id, api_key, base_url, stripe_url, story)


def add_template_automation(app, api_key: str, key: str) -> int:
    """Create (enabled) the automation of one of the plugin's suggested templates, the way
    any client would: ``POST /api/v1/automations`` with the project's API key."""
    template = next(t for t in STRIPE_TEMPLATES if t["key"] == key)
    fields = ("name", "trigger", "conditions", "delay_seconds", "action", "subject", "html",
              "text")
    response = app.test_client().post(
        "/api/v1/automations", headers={"Authorization": f"Bearer {api_key}"},
        json={**{f: template[f] for f in fields}, "enabled": True, "template_key": key})
    if response.status_code != 201:
        raise RuntimeError(f"the demo automation was refused: {response.get_json()}")
    return response.get_json()["id"]


def _create_schema(app) -> None:
    if any((MIGRATIONS_DIR / "versions").glob("*.py")):
        upgrade(revision="heads")
    else:
        db.create_all()


def simulate_command(d: Demo, action: str = "charge_failed") -> str:
    """The exact shell line that fires ``action`` at the demo's double (run from the repo)."""
    emails = [c["email"] for c in d.double.state.accounts[d.account].customers.items
              if c.get("email") and not c.get("deleted")]
    return (f".venv/bin/crowdpower stripe-double simulate {action} --account {d.account} "
            f"--email {emails[0] if emails else 'ann@example.com'} --url {d.stripe_url}")


@click.command("demo")
@click.option("--port", default=5000, show_default=True, help="Port of the CrowdPower app.")
@click.option("--stripe-port", default=12111, show_default=True,
              help="Port of the Stripe double.")
@click.option("--customers", default=250, show_default=True,
              help="Customers seeded in the demo Stripe account.")
@click.option("--host", default="127.0.0.1", show_default=True)
def demo(port: int, stripe_port: int, customers: int, host: str) -> None:
    """Run CrowdPower with a seeded Stripe double, a demo project and user."""
    d = prepare_demo(port=port, stripe_port=stripe_port, customers=customers, host=host)
    click.echo(f"""
CrowdPower demo is running.

  1. Open {d.base_url}/login and log in as {DEMO_EMAIL} / {DEMO_PASSWORD}
  2. Integrations → Connect a test-mode account → approve the (fake) Stripe App install
  3. Watch the sync's progress bar, then open Customers and a customer's profile
  4. Fire billing events at {d.stripe_url}/_double/ ("charge failed" for a customer…)
     and see them land on the profile (and the dunning automation's email in the outbox)
  5. Revenue shows six months of MRR and this month's movements; once the sync is done
     the demo plays failed payments that its dunning email recovers (Automations shows
     the recovered amount), an upgrade, a downgrade and a churn

     or from a shell in this folder:
       {simulate_command(d)}

  Stripe double (account {d.account}): {d.stripe_url}/_double/
  API key of the demo project: {d.api_key}
    curl -H "Authorization: Bearer {d.api_key}" {d.base_url}/api/v1/segments

Ctrl-C stops everything.
""")
    try:
        run_simple(host, port, d.app, threaded=True, use_reloader=False)
    finally:
        d.double.stop()

