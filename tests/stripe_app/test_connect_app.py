"""Connecting as a Stripe App, end to end: install link → callback → tokens → sync."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

import pytest
import stripe
from sqlalchemy import select, text

from crowdpower.extensions import db
from crowdpower.models import Customer
from crowdpower.plugins.stripe.models import StripeAppToken, StripeConnection
from crowdpower.tenancy import project_scope
from tests.conftest import api, csrf_from
from tests.stripe_plugin.conftest import browser_login, flashes


def connection(project_id: int) -> StripeConnection | None:
    db.session.expire_all()
    with project_scope(project_id):
        return db.session.scalar(select(StripeConnection).where(
            StripeConnection.project_id == project_id))


def stored_tokens(project_id: int) -> list[StripeAppToken]:
    db.session.expire_all()
    with project_scope(project_id):
        return list(db.session.scalars(select(StripeAppToken).where(
            StripeAppToken.project_id == project_id)))


@pytest.fixture
def member(stripe_double, live_server, make_project, make_user):
    project_id, api_key = make_project("Acme")
    make_user("owner@acme.test", project_id)
    browser = browser_login(live_server.url, "owner@acme.test")
    return project_id, api_key, browser


def connect_url(live_server, project_id: int, mode: str | None) -> str:
    return (f"{live_server.url}/projects/{project_id}/integrations/stripe/connect"
            + ("?mode=test" if mode == "test" else ""))


@pytest.mark.parametrize("mode", ["live", "test"])
def test_connect_in_each_mode(member, stripe_double, live_server, app, client, drain, mode):
    project_id, api_key, browser = member
    livemode = mode == "live"
    account = stripe_double.create_account(livemode=livemode)
    stripe_double.seed(account, customers=30, seed=5)
    stripe_double.oauth_next_account = account

    card = browser.get(f"{live_server.url}/projects/{project_id}/integrations").text
    assert "Connect Stripe" in card and "Connect a test-mode account" in card
    response = browser.get(connect_url(live_server, project_id, mode), allow_redirects=False)
    assert response.status_code == 302
    location = response.headers["Location"]
    link = app.config["STRIPE_APP_AUTHORIZE_URL" if livemode else "STRIPE_APP_TEST_AUTHORIZE_URL"]
    assert location.startswith(link + "&")  # the Dashboard's link, plus ours
    query = parse_qs(urlparse(location).query)
    assert query["redirect_uri"] == [live_server.url + "/integrations/stripe/callback"]
    assert len(query["state"][0]) >= 32 and "scope" not in query

    page = browser.get(location)  # install (auto-approved) → callback → Integrations
    assert any("connected" in f for f in flashes(page.text)), page.text
    exchanges = [e for e in stripe_double.apps.log if e["grant_type"] == "authorization_code"]
    assert [e["status"] for e in exchanges] == [200]  # once, with the key of that mode
    conn = connection(project_id)
    assert (conn.status, conn.kind, conn.stripe_user_id, conn.livemode) == (
        "connected", "app", account, livemode)
    assert not hasattr(conn, "access_token")  # App tokens live in stripe_app_tokens
    [tok] = stored_tokens(project_id)
    assert (tok.account_id, tok.livemode, tok.refreshes) == (account, livemode, 0)
    assert tok.access_token in stripe_double.apps.access and tok.access_issued_at is not None
    raw = db.session.execute(text("SELECT access_token, refresh_token FROM stripe_app_tokens")
                             ).one()
    assert tok.access_token not in raw[0] and tok.refresh_token not in raw[1]  # encrypted

    drain()
    status = api(client, api_key).get("/api/v1/integrations/stripe").json
    assert status["status"] == "connected" and status["connection"] == "app"
    assert status["livemode"] is livemode and status["sync"]["state"] == "succeeded"
    with project_scope(project_id):
        assert db.session.scalar(select(db.func.count()).select_from(Customer).where(
            Customer.project_id == project_id)) > 0
    # Read with the access token: the double saw requests on the account, none of them
    # with the platform key.
    assert stripe_double.request_count(account=account, path="/v1/customers") >= 1


def test_test_mode_needs_its_settings(member, live_server, app):
    project_id, _key, browser = member
    app.config["STRIPE_TEST_SECRET_KEY"] = None
    page = browser.get(connect_url(live_server, project_id, "test"))
    assert any("STRIPE_TEST_SECRET_KEY" in f for f in flashes(page.text))
    assert connection(project_id) is None


def test_state_is_bound_to_the_session_and_the_code_used_once(member, stripe_double,
                                                              live_server):
    project_id, _key, browser = member
    stripe_double.oauth_next_account = stripe_double.create_account()
    location = browser.get(connect_url(live_server, project_id, "test"),
                           allow_redirects=False).headers["Location"]
    callback = browser.get(location, allow_redirects=False).headers["Location"]
    thief = browser_login(live_server.url, "owner@acme.test")
    assert thief.get(callback).status_code == 400
    assert browser.get(callback).status_code == 200
    assert browser.get(callback).status_code == 400  # the state is burnt: no second exchange
    assert sum(1 for e in stripe_double.apps.log
               if e["grant_type"] == "authorization_code") == 1


def test_other_projects_connect_is_404(member, live_server, make_project, make_user):
    project_id, _key, _browser = member
    other_id, _ = make_project("Globex")
    make_user("owner@globex.test", other_id)
    other = browser_login(live_server.url, "owner@globex.test")
    assert other.get(connect_url(live_server, project_id, "test"),
                     allow_redirects=False).status_code == 404


def test_disconnect_deletes_tokens_and_says_where_to_uninstall(
        member, stripe_double, live_server, drain):
    project_id, _key, browser = member
    account = stripe_double.create_account()
    stripe_double.oauth_next_account = account
    browser.get(connect_url(live_server, project_id, "test"))
    drain()
    assert stored_tokens(project_id)
    page = browser.get(f"{live_server.url}/projects/{project_id}/integrations")
    done = browser.post(f"{live_server.url}/projects/{project_id}/integrations/stripe/disconnect",
                        data={"csrf_token": csrf_from(page.text)})
    [flash] = [f for f in flashes(done.text) if "disconnected" in f]
    assert "https://dashboard.stripe.com/test/settings/apps" in flash
    assert connection(project_id).status == "disconnected"
    assert stored_tokens(project_id) == []


def test_deauthorized_event_marks_the_connection_revoked(wired, tenant, connect_account):
    project_id, _key, _c = tenant
    double = wired.double
    account = double.create_account()
    connect_account(project_id, account, kind="app")
    double.uninstall_app(account, livemode=False)  # the tenant uninstalls in Stripe
    wired.settle()
    conn = connection(project_id)
    assert conn.status == "disconnected" and "revoked" in conn.last_error
    assert stored_tokens(project_id) == []


def test_each_modes_webhook_endpoint_has_its_own_secret(stripe_double, tenant, app, client):
    """Live and test-mode Connect endpoints sign with their own secrets; both are accepted,
    a secret of neither is not."""
    app.config["STRIPE_TEST_WEBHOOK_SECRET"] = "whsec_test_endpoint"
    for i, (secret, expected) in enumerate([("whsec_test_endpoint", 200),
                                            ("whsec_someone_else", 400)]):
        body = json.dumps({"id": f"evt_secret_{i}", "object": "event", "type": "customer.created",
                           "account": "acct_nobody", "livemode": False, "created": 1_800_000_000,
                           "data": {"object": {"id": "cus_1", "object": "customer"}}})
        header = stripe.WebhookSignature.generate_signature_header(body, secret)
        response = client.post("/integrations/stripe/webhook", data=body.encode(),
                               headers={"Stripe-Signature": header,
                                        "Content-Type": "application/json"})
        assert response.status_code == expected, response.get_data(as_text=True)


def test_declined_or_refused_installs_change_nothing(member, stripe_double, live_server):
    project_id, _key, browser = member
    stripe_double.oauth_auto_approve = "deny"
    page = browser.get(connect_url(live_server, project_id, "test"))
    assert page.status_code == 200 and any("declined" in f for f in flashes(page.text))
    stripe_double.oauth_auto_approve = True
    stripe_double.apps.code_ttl = -1  # Stripe refuses the code (expired): a message, no 500
    page = browser.get(connect_url(live_server, project_id, "test"))
    assert page.status_code == 200
    assert any("Stripe refused the connection" in f and "expired" in f
               for f in flashes(page.text)), flashes(page.text)
    assert connection(project_id) is None and stored_tokens(project_id) == []
