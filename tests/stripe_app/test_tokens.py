"""App tokens: they expire mid-sync, rotate under concurrency, get revoked, lack permissions."""

from __future__ import annotations

import json
import threading

from crowdpower_stripe_double.apps import ALL_PERMISSIONS
from sqlalchemy import func, select

from crowdpower.extensions import db
from crowdpower.models import Customer
from crowdpower.plugins.stripe import tokens
from crowdpower.plugins.stripe.client import account_client
from crowdpower.plugins.stripe.models import (
    StripeAppToken,
    StripeConnection,
    StripeCustomerLink,
    StripeWebhookEvent,
)
from crowdpower.plugins.stripe.permissions import manifest_permissions
from crowdpower.tenancy import project_scope
from tests.conftest import api
from tests.stripe_plugin.test_webhooks import post


def token_row(project_id: int) -> StripeAppToken:
    db.session.expire_all()
    with project_scope(project_id):
        return db.session.scalar(select(StripeAppToken).where(
            StripeAppToken.project_id == project_id))


def connection(project_id: int) -> StripeConnection:
    db.session.expire_all()
    with project_scope(project_id):
        return db.session.scalar(select(StripeConnection).where(
            StripeConnection.project_id == project_id))


def card(tenant_client, project_id: int) -> str:
    return tenant_client.get(f"/projects/{project_id}/integrations").get_data(as_text=True)


def test_sync_survives_the_token_expiring_twice(stripe_double, tenant, app, connect_account,
                                                start_sync, wait_sync):
    project_id, _key, _c = tenant
    account = stripe_double.create_account()
    stripe_double.seed(account, customers=320, seed=13)
    app.config["STRIPE_SYNC_PAGE_SIZE"] = 20
    connect_account(project_id, account, kind="app")
    stripe_double.reset_request_log()
    # Access tokens live 0.4 s here and every request takes 30 ms: a ~50-page sync
    # outlives several of them (we still believe in Stripe's hour: each expiry is a 401).
    stripe_double.apps.access_token_ttl = 0.4
    stripe_double.apps.expire(account)
    stripe_double.faults.slow(account, seconds=0.03)

    start_sync(project_id)
    run = wait_sync(project_id, timeout=120)
    assert run.state == "succeeded", run.error
    expired = stripe_double.apps.expired_hits
    assert expired >= 2 and stripe_double.apps.refreshes(200) >= 2
    assert stripe_double.apps.refreshes(400) == 0
    assert token_row(project_id).refreshes == stripe_double.apps.refreshes(200)

    customers = stripe_double.objects(account, "customer")
    assert len(customers) >= 300
    assert run.counts["customers"] == len(customers)  # every page once: nothing twice or lost
    # Every request counted, the refused ones too; and exactly one more per expiry than a
    # sync whose token never expires (a resync: a full sync of the same account).
    assert run.api_calls == stripe_double.request_count(account=account)
    stripe_double.faults.clear()
    stripe_double.apps.access_token_ttl = 3600
    start_sync(project_id, reason="resync")
    again = wait_sync(project_id, timeout=120)
    assert again.state == "succeeded" and again.id != run.id
    expired_again = stripe_double.apps.expired_hits - expired  # the last 0.4 s token, maybe
    assert run.api_calls - expired == again.api_calls - expired_again
    with project_scope(project_id):
        linked = list(db.session.scalars(select(StripeCustomerLink.stripe_customer_id).where(
            StripeCustomerLink.project_id == project_id)))
    live = {c["id"] for c in customers}
    assert sorted(linked) == sorted(live)  # every customer once


def test_two_workers_refreshing_at_once_end_with_one_token(stripe_double, tenant, app,
                                                            connect_account):
    project_id, _key, _c = tenant
    account = stripe_double.create_account()
    stripe_double.create_customer(account, email="a@x.test")
    connect_account(project_id, account, kind="app")
    stale = token_row(project_id).access_token
    db.session.commit()
    workers, results, errors = 4, [], []
    start = threading.Barrier(workers)

    def worker() -> None:
        try:
            with app.app_context():
                start.wait()
                results.append(tokens.refresh(app, project_id, account, False, stale=stale))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert stripe_double.apps.refreshes(200) == 1 and stripe_double.apps.refreshes(400) == 0
    assert len({r.access_token for r in results}) == 1
    row = token_row(project_id)
    assert row.access_token == results[0].access_token != stale and row.refreshes == 1
    # The stored pair works: the access token reads, the refresh token refreshes.
    assert account_client(project_id).get("/v1/customers")["data"]
    assert tokens.refresh(app, project_id, account, False, stale=row.access_token)
    assert stripe_double.apps.refreshes(200) == 2 and stripe_double.apps.refreshes(400) == 0


def test_tokens_are_refreshed_ahead_of_expiry(stripe_double, tenant, app, connect_account):
    project_id, _key, _c = tenant
    account = stripe_double.create_account()
    connect_account(project_id, account, kind="app")
    account_client(project_id).get("/v1/customers")
    assert stripe_double.apps.refreshes(200) == 0
    app.config["STRIPE_APP_TOKEN_LIFETIME"] = 200  # within the 300 s margin: due now
    account_client(project_id).get("/v1/customers")
    assert stripe_double.apps.refreshes(200) == 1 and stripe_double.apps.expired_hits == 0


def test_revoked_refresh_token_shows_reconnect_needed(stripe_double, tenant, connect_account,
                                                      start_sync, wait_sync, drain):
    project_id, key, browser = tenant
    account = stripe_double.create_account()
    stripe_double.seed(account, customers=10, seed=2)
    connect_account(project_id, account, kind="app")
    stripe_double.apps.uninstall(account, False)  # access revoked; no webhook seen yet

    start_sync(project_id)
    run = wait_sync(project_id)
    assert run.state == "failed" and "reconnect" in run.error.lower()
    assert stripe_double.apps.refreshes(400) == 1  # one refused refresh, no retry storm
    conn = connection(project_id)
    assert conn.status == "reconnect_needed" and token_row(project_id).revoked_at is not None
    page = card(browser, project_id)
    assert "Reconnect needed" in page and "/integrations/stripe/connect?mode=test" in page
    assert ">Reconnect</a>" in page
    status = api(browser, key).get("/api/v1/integrations/stripe").json
    assert status["status"] == "error" and status["reconnect_needed"] is True

    # Syncs and look-ups stop cleanly: no call to Stripe, no retry.
    before = len(stripe_double.apps.log)
    assert api(browser, key).post("/api/v1/integrations/stripe/sync").status_code == 409
    body = json.dumps({"id": "evt_reconnect_1", "object": "event", "type": "charge.failed",
                       "account": account, "livemode": False, "created": 1_800_000_000,
                       "api_version": "2025-01-01", "data": {"object": {
                           "id": "ch_1", "object": "charge", "customer": "cus_unknown",
                           "amount": 100, "currency": "usd", "status": "failed"}}}).encode()
    assert post(browser, body).status_code == 200
    drain()
    db.session.expire_all()
    row = db.session.scalar(select(StripeWebhookEvent).where(
        StripeWebhookEvent.event_id == "evt_reconnect_1"))
    assert row.status == "ignored" and "reconnect" in row.error and row.attempts == 1
    assert len(stripe_double.apps.log) == before


def test_missing_permission_is_named_on_the_card(stripe_double, tenant, connect_account,
                                                 start_sync, wait_sync):
    project_id, _key, browser = tenant
    account = stripe_double.create_account()
    stripe_double.seed(account, customers=10, seed=2)
    connect_account(project_id, account, kind="app",
                    permissions=set(ALL_PERMISSIONS) - {"charge_read"})
    start_sync(project_id)
    run = wait_sync(project_id)
    assert run.state == "failed" and "charge_read" in run.error
    assert "charge_read" in connection(project_id).last_error
    assert "charge_read" in card(browser, project_id)


def test_webhook_look_up_survives_an_expired_token(wired, tenant, connect_account):
    project_id, _key, _c = tenant
    double = wired.double
    account = double.create_account()
    connect_account(project_id, account, kind="app")
    double.webhooks.configure(url=None)
    cus = double.create_customer(account, email="late@x.test")  # never delivered
    double.webhooks.configure(url=wired.url + "/integrations/stripe/webhook")
    double.apps.expire(account)
    double.create_charge(account, cus["id"], 500, "usd", status="failed")
    wired.settle()
    with project_scope(project_id):
        found = db.session.scalar(select(func.count()).select_from(Customer).where(
            Customer.project_id == project_id, Customer.email_key == "late@x.test"))
    assert found == 1
    assert double.apps.expired_hits >= 1 and double.apps.refreshes(200) == 1


def test_the_manifest_asks_for_exactly_what_we_use(stripe_double, wired, tenant,
                                                   connect_account, start_sync, wait_sync):
    """Installed with exactly the manifest's permissions, a sync and webhook look-ups work,
    and every permission asked for is used (by a read, or to receive events)."""
    project_id, _key, _c = tenant
    manifest = manifest_permissions()
    account = stripe_double.create_account()
    stripe_double.seed(account, customers=40, seed=9)
    connect_account(project_id, account, kind="app", permissions=manifest)
    start_sync(project_id)
    run = wait_sync(project_id)
    assert run.state == "succeeded", run.error
    stripe_double.webhooks.configure(url=None)
    cus = stripe_double.create_customer(account, email="m@x.test")
    price = stripe_double.create_price(account, 900, "usd", product_name="New plan")
    stripe_double.webhooks.configure(url=wired.url + "/integrations/stripe/webhook")
    stripe_double.create_subscription(account, cus["id"], price["id"])
    wired.settle()
    receiving = {"event_read", "invoice_read"}  # needed to receive events, not to read
    assert stripe_double.apps.used <= manifest
    assert manifest - stripe_double.apps.used <= receiving


def test_a_legacy_link_keeps_working_in_app_mode(stripe_double, tenant, connect_account,
                                                 start_sync, wait_sync):
    """An existing Connect link (kind "connect") still reads with the platform key and
    ``Stripe-Account`` while new connections are App installs."""
    project_id, _key, _c = tenant
    account = stripe_double.create_account()
    stripe_double.seed(account, customers=15, seed=4)
    connect_account(project_id, account, kind="connect")
    start_sync(project_id)
    run = wait_sync(project_id)
    assert run.state == "succeeded", run.error
    assert run.counts["customers"] == len(stripe_double.objects(account, "customer"))
    assert stripe_double.apps.log == [] and stripe_double.apps.used == set()
    assert token_row(project_id) is None


def test_test_data_on_a_live_install_is_not_looked_up(wired, tenant, connect_account):
    """A live App install's token reads live objects only: test-mode events of an unknown
    customer are ignored with a note saying how to get them (no 404 of our own making)."""
    project_id, _key, _c = tenant
    double = wired.double
    account = double.create_account(livemode=True)
    connect_account(project_id, account, livemode=True, accept_test_data=True, kind="app")
    cus = double.create_customer(account, email="tester@x.test", emit=False, livemode=False)
    double.create_charge(account, cus["id"], 900, "usd", status="failed", livemode=False)
    wired.settle()
    db.session.expire_all()
    [row] = list(db.session.scalars(select(StripeWebhookEvent).where(
        StripeWebhookEvent.type == "charge.failed")))
    assert row.status == "ignored" and "install the App in test mode" in row.error
    assert double.request_count(account=account) == 0


def test_app_tokens_survive_key_rotation(stripe_double, tenant, app, connect_account):
    """``crowdpower rotate-encryption`` re-encrypts the App's tokens (compare-and-set, so a
    refresh token rotated meanwhile is never overwritten); they keep working."""
    from click.testing import CliRunner
    from cryptography.fernet import Fernet
    from flask.cli import ScriptInfo

    from crowdpower.cli import cli

    project_id, _key, _c = tenant
    account = stripe_double.create_account()
    stripe_double.create_customer(account, email="k@x.test")
    connect_account(project_id, account, kind="app")
    before = token_row(project_id)
    new_key = Fernet.generate_key().decode()
    app.config["ENCRYPTION_KEYS"] = [new_key]
    result = CliRunner().invoke(cli, ["rotate-encryption"],
                                obj=ScriptInfo(create_app=lambda *a, **k: app))
    assert result.exit_code == 0, result.output
    assert '"stripe_app_tokens.refresh_token": 1' in result.output
    app.config["SECRET_KEY"] = "another-secret-key"  # only the new key reads them now
    db.session.expire_all()
    after = token_row(project_id)
    assert after.refresh_token == before.refresh_token
    fresh = tokens.refresh(app, project_id, account, False, stale=after.access_token)
    assert account_client(project_id).get("/v1/customers")["data"]
    assert fresh.access_token == token_row(project_id).access_token
    assert stripe_double.apps.refreshes(400) == 0
