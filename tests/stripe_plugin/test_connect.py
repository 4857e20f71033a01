"""Legacy Connect OAuth end to end: browser session → the double's consent → callback → sync."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
import stripe
from sqlalchemy import func, select

from crowdpower.extensions import db
from crowdpower.models import Customer, EventDefinition, Segment, TraitDefinition
from crowdpower.plugins.stripe.models import StripeConnection, StripeSyncRun
from crowdpower.tenancy import project_scope
from tests.conftest import STRIPE_CLIENT_ID, api, csrf_from
from tests.stripe_plugin.conftest import browser_login, flashes


def count(model, project_id: int) -> int:
    with project_scope(project_id):
        return db.session.scalar(select(func.count()).select_from(model).where(
            model.project_id == project_id))


def connection(project_id: int) -> StripeConnection | None:
    db.session.expire_all()
    with project_scope(project_id):
        return db.session.scalar(select(StripeConnection).where(
            StripeConnection.project_id == project_id))


@pytest.fixture(autouse=True)
def legacy_connect_mode(app_config):
    """These are legacy Connect OAuth's tests (``STRIPE_CONNECT_MODE=connect``); the Stripe
    App flow has its own in tests/stripe_app."""
    app_config["STRIPE_CONNECT_MODE"] = "connect"


@pytest.fixture
def member(stripe_double, live_server, make_project, make_user):
    """A project, its member's browser session, and a seeded Stripe account to connect."""
    project_id, api_key = make_project("Acme")
    make_user("owner@acme.test", project_id)
    browser = browser_login(live_server.url, "owner@acme.test")
    account = stripe_double.create_account(email="billing@acme.test")
    stripe_double.seed(account, customers=60, seed=3)
    stripe_double.oauth_next_account = account
    return project_id, api_key, browser, account


def start(browser, live_server, project_id: int) -> str:
    """Click Connect Stripe; returns the double's authorize URL (not yet visited)."""
    response = browser.get(f"{live_server.url}/projects/{project_id}/integrations/stripe/connect",
                           allow_redirects=False)
    assert response.status_code == 302
    return response.headers["Location"]


def authorize(browser, url: str) -> str:
    """Let the double approve; returns the callback URL it redirects to (not yet visited)."""
    response = browser.get(url, allow_redirects=False)
    assert response.status_code == 302
    return response.headers["Location"]


def test_connect_stores_connection_seeds_project_and_syncs(member, stripe_double, live_server,
                                                           client, drain):
    project_id, api_key, browser, account = member
    url = start(browser, live_server, project_id)
    parts = urlparse(url)
    query = parse_qs(parts.query)
    assert url.startswith(stripe_double.test_base_url + "/oauth/authorize")
    assert query["response_type"] == ["code"] and query["scope"] == ["read_write"]
    assert query["client_id"] == [STRIPE_CLIENT_ID]
    assert query["redirect_uri"] == [live_server.url + "/integrations/stripe/callback"]
    assert len(query["state"][0]) >= 32

    page = browser.get(url)  # consent (auto-approved) → callback → Integrations page
    assert page.url.endswith(f"/projects/{project_id}/integrations")
    assert any("connected" in f for f in flashes(page.text)), page.text
    conn = connection(project_id)
    assert (conn.status, conn.stripe_user_id, conn.livemode) == ("connected", account, False)
    # a legacy link calls Stripe with the platform key: Stripe's tokens are not kept
    columns = {c.name for c in StripeConnection.__table__.columns}
    assert not columns & {"access_token", "refresh_token"}

    assert count(Segment, project_id) == 2
    assert count(EventDefinition, project_id) == 8 + 7  # billing events + lifecycle ones
    assert count(TraitDefinition, project_id) >= 20

    drain()
    db.session.expire_all()
    with project_scope(project_id):
        run = db.session.scalar(select(StripeSyncRun).where(
            StripeSyncRun.project_id == project_id))
    assert run.reason == "connect" and run.state == "succeeded", run.error
    assert count(Customer, project_id) > 40
    status = api(client, api_key).get("/api/v1/integrations/stripe").json
    assert status["status"] == "connected" and status["account_id"] == account
    assert status["sync"]["state"] == "succeeded"
    card = browser.get(f"{live_server.url}/projects/{project_id}/integrations").text
    assert account in card and "Disconnect" in card and "Resync" in card


def test_reconnecting_creates_no_duplicates(member, stripe_double, live_server, drain):
    project_id, _key, browser, account = member
    browser.get(start(browser, live_server, project_id))
    drain()
    page = browser.get(f"{live_server.url}/projects/{project_id}/integrations")
    browser.post(f"{live_server.url}/projects/{project_id}/integrations/stripe/disconnect",
                 data={"csrf_token": csrf_from(page.text)})
    assert connection(project_id).status == "disconnected"
    stripe_double.oauth_next_account = account
    browser.get(start(browser, live_server, project_id))
    drain()
    assert connection(project_id).status == "connected"
    assert count(Segment, project_id) == 2
    assert count(EventDefinition, project_id) == 8 + 7


def test_declining_changes_nothing(member, stripe_double, live_server):
    project_id, _key, browser, _account = member
    stripe_double.oauth_auto_approve = "deny"
    page = browser.get(start(browser, live_server, project_id))
    assert any("declined" in f for f in flashes(page.text))
    assert connection(project_id) is None
    assert count(Segment, project_id) == 0


def test_consent_page_then_approve(member, stripe_double, live_server):
    project_id, _key, browser, account = member
    stripe_double.oauth_auto_approve = False
    consent = browser.get(start(browser, live_server, project_id))
    assert "Connect my Stripe account" in consent.text and account in consent.text
    fields = dict(parse_qs(urlparse(consent.url).query))
    form = {k: v[0] for k, v in fields.items()}
    page = browser.post(stripe_double.test_base_url + "/oauth/authorize",
                        data={**form, "account": account, "decision": "approve"})
    assert any("connected" in f for f in flashes(page.text))
    assert connection(project_id).stripe_user_id == account


def test_double_submitted_callback_exchanges_the_code_once(member, stripe_double, live_server):
    project_id, _key, browser, account = member
    callback = authorize(browser, start(browser, live_server, project_id))
    before = len(stripe_double.token_requests)
    first = browser.get(callback)
    assert first.status_code == 200 and connection(project_id).status == "connected"
    second = browser.get(callback)
    assert second.status_code == 400
    assert len(stripe_double.token_requests) == before + 1  # never presented twice
    assert connection(project_id).status == "connected"
    # Stripe (the double) still lets us in: the code was not reused.
    client = stripe.StripeClient(stripe_double.secret_key, stripe_account=account,
                                 base_addresses={"api": stripe_double.test_base_url})
    assert client.v1.customers.list({"limit": 1}).data


def test_state_is_bound_to_the_browser_session(member, stripe_double, live_server):
    project_id, _key, browser, _account = member
    callback = authorize(browser, start(browser, live_server, project_id))
    thief = browser_login(live_server.url, "owner@acme.test")  # same user, other session
    assert thief.get(callback).status_code == 400
    assert connection(project_id) is None
    assert browser.get(callback).status_code == 200  # the rightful session still can


def test_forged_and_expired_states_are_rejected(member, stripe_double, live_server, app):
    project_id, _key, browser, _account = member
    callback = authorize(browser, start(browser, live_server, project_id))
    forged = callback.replace("state=", "state=x")
    assert browser.get(forged).status_code == 400
    no_state = callback.split("?")[0] + "?code=ac_whatever"
    assert browser.get(no_state).status_code == 400
    app.config["STRIPE_OAUTH_STATE_TTL"] = -1
    late = authorize(browser, start(browser, live_server, project_id))
    assert browser.get(late).status_code == 400
    assert connection(project_id) is None


def test_one_account_connects_to_one_project(member, stripe_double, live_server, make_project,
                                             make_user):
    project_id, _key, browser, account = member
    browser.get(start(browser, live_server, project_id))
    other_id, _ = make_project("Globex")
    make_user("owner@globex.test", other_id)
    other = browser_login(live_server.url, "owner@globex.test")
    stripe_double.oauth_next_account = account
    page = other.get(start(other, live_server, other_id))
    assert any("already connected to another" in f for f in flashes(page.text))
    assert connection(other_id) is None
    assert connection(project_id).status == "connected"


def test_other_projects_routes_are_404(member, stripe_double, live_server, make_project,
                                       make_user):
    project_id, _key, browser, _account = member
    other_id, _ = make_project("Globex")
    make_user("owner@globex.test", other_id)
    other = browser_login(live_server.url, "owner@globex.test")
    base = f"{live_server.url}/projects/{project_id}/integrations/stripe"
    assert other.get(base + "/connect", allow_redirects=False).status_code == 404
    token = csrf_from(other.get(f"{live_server.url}/projects/{other_id}/integrations").text)
    for action in ("disconnect", "resync", "settings"):
        assert other.post(f"{base}/{action}", data={"csrf_token": token}).status_code == 404
    # A state minted for this project, replayed from the other member's session.
    callback = authorize(browser, start(browser, live_server, project_id))
    assert other.get(callback).status_code == 400


def test_disconnect_revokes_keeps_data_and_needs_csrf(member, stripe_double, live_server,
                                                      drain):
    project_id, _key, browser, account = member
    browser.get(start(browser, live_server, project_id))
    drain()
    customers = count(Customer, project_id)
    url = f"{live_server.url}/projects/{project_id}/integrations/stripe/disconnect"
    assert browser.post(url, data={}).status_code == 400  # no CSRF token
    assert connection(project_id).status == "connected"
    page = browser.get(f"{live_server.url}/projects/{project_id}/integrations")
    done = browser.post(url, data={"csrf_token": csrf_from(page.text)})
    assert any("disconnected" in f for f in flashes(done.text))
    conn = connection(project_id)
    assert conn.status == "disconnected" and conn.active_account_id is None
    assert count(Customer, project_id) == customers
    assert not stripe_double.state.accounts[account].connected  # revoked at Stripe
    assert "Connect Stripe" in browser.get(
        f"{live_server.url}/projects/{project_id}/integrations").text


def test_resync_button_and_second_click_is_a_noop(member, stripe_double, live_server, drain):
    project_id, _key, browser, _account = member
    browser.get(start(browser, live_server, project_id))
    drain()
    page = browser.get(f"{live_server.url}/projects/{project_id}/integrations")
    token = csrf_from(page.text)
    url = f"{live_server.url}/projects/{project_id}/integrations/stripe/resync"
    first = browser.post(url, data={"csrf_token": token})
    assert any("Sync started" in f for f in flashes(first.text))
    drain()
    with project_scope(project_id):
        runs = db.session.scalars(select(StripeSyncRun.state).where(
            StripeSyncRun.project_id == project_id)).all()
    assert runs == ["succeeded", "succeeded"]
