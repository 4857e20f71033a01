"""The failed-events page behind the card's webhook health: the list, one event, Retry and
Retry all (tenant-scoped: another project's event ids are 404), and a retry that really
applies the event again (the real inbox path, RQ worker in postgres mode)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from crowdpower.extensions import db
from crowdpower.models import Customer, utcnow
from crowdpower.plugins.stripe.failed_events import PER_PAGE, error_in_words
from crowdpower.plugins.stripe.models import StripeWebhookEvent
from crowdpower.tenancy import project_scope
from tests.conftest import csrf_from
from tests.stripe_plugin.test_webhooks import charge_event, post

BASE = "/projects/{}/integrations/stripe/webhooks"


def stored(project_id: int, event_id: str, *, status: str = "failed", hours: float = 1,
           error: str = "APIError: Request req_1: Something went wrong on Stripe's end.",
           attempts: int = 5) -> int:
    row = StripeWebhookEvent(event_id=event_id, account_id="acct_x", project_id=project_id,
                             type="charge.failed", created=0, payload="{}", status=status,
                             attempts=attempts, error=error,
                             received_at=utcnow() - timedelta(hours=hours))
    db.session.add(row)
    db.session.commit()
    return row.id


def row_of(row_id: int) -> StripeWebhookEvent:
    db.session.expire_all()
    return db.session.get(StripeWebhookEvent, row_id)


def token(client, project_id: int) -> str:
    return csrf_from(client.get(BASE.format(project_id) + "/failed").get_data(as_text=True))


def test_errors_read_in_words():
    assert error_in_words("APIConnectionError: Request req_9: Connection refused") == {
        "words": "Stripe could not be reached.", "detail": "Connection refused"}
    again = error_in_words("retried by the tenant after: retried by operator after: "
                           "RateLimitError: Too many requests")
    assert again == {"words": "Stripe asked us to slow down.", "detail": "Too many requests"}
    assert error_in_words("KeyError: 'data'")["words"] == "Applying the event failed (KeyError)."
    assert error_in_words(None)["words"] == "No error was recorded."
    assert error_in_words("something odd happened") == {
        "words": "Applying the event failed.", "detail": "something odd happened"}


def test_the_page_lists_failed_and_retrying_events_of_the_last_day_newest_first(
        tenant, other_tenant):
    project_id, _key, c = tenant
    other_id, _okey, _oc = other_tenant
    stored(project_id, "evt_old", hours=30)
    stored(project_id, "evt_failed", hours=2)
    stored(project_id, "evt_retrying", status="retry", attempts=2, hours=1,
           error="APIConnectionError: Request req_2: Connection refused")
    stored(project_id, "evt_done", status="processed", attempts=1, error=None)
    stored(other_id, "evt_theirs", hours=1)

    page = c.get(BASE.format(project_id) + "/failed")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    ids = re.findall(r'data-event-id="(evt_\w+)"', html)
    assert ids == ["evt_retrying", "evt_failed"]  # newest first; no others, no old ones
    assert "Stripe answered with a server error." in html        # the error in words
    assert "Stripe could not be reached." in html and "Connection refused" in html
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"[^>]*>'
                     r'(an? hour ago|\d+ hours ago)</time>', html)
    assert ">retrying<" in html and ">failed<" in html
    assert "1 older" in html and "Retry all 3" in html

    everything = c.get(BASE.format(project_id) + "/failed?window=all").get_data(as_text=True)
    assert re.findall(r'data-event-id="(evt_\w+)"', everything) == [
        "evt_retrying", "evt_failed", "evt_old"]
    assert c.get(BASE.format(project_id) + "/failed?window=week").status_code == 400


def test_the_page_pages(tenant):
    project_id, _key, c = tenant
    for n in range(PER_PAGE + 3):
        stored(project_id, f"evt_{n:03d}")
    first = c.get(BASE.format(project_id) + "/failed").get_data(as_text=True)
    assert len(re.findall(r'data-event-id=', first)) == PER_PAGE
    assert f"evt_{PER_PAGE + 2:03d}" in first and 'rel="next"' in first
    second = c.get(BASE.format(project_id) + "/failed?page=2").get_data(as_text=True)
    assert re.findall(r'data-event-id="(evt_\w+)"', second) == ["evt_002", "evt_001",
                                                                "evt_000"]
    assert c.get(BASE.format(project_id) + "/failed?page=x").status_code == 200  # page 1


def test_one_event_and_its_retry_belong_to_its_project(tenant, other_tenant):
    project_id, _key, c = tenant
    other_id, _okey, oc = other_tenant
    mine = stored(project_id, "evt_mine")
    theirs = stored(other_id, "evt_theirs")
    detail = c.get(BASE.format(project_id) + "/events/evt_mine")
    assert detail.status_code == 200
    html = detail.get_data(as_text=True)
    assert "Stripe answered with a server error." in html
    assert "https://dashboard.stripe.com/test/events/evt_mine" in html

    # Twins: an event id of another project is 404, shown or retried, from either side.
    assert c.get(BASE.format(project_id) + "/events/evt_theirs").status_code == 404
    assert oc.get(BASE.format(project_id) + "/events/evt_mine").status_code == 404
    assert oc.get(BASE.format(project_id) + "/failed").status_code == 404
    their_token = token(oc, other_id)
    assert oc.post(BASE.format(other_id) + "/events/evt_mine/retry",
                   data={"csrf_token": their_token}).status_code == 404
    assert oc.post(BASE.format(project_id) + "/events/evt_mine/retry",
                   data={"csrf_token": their_token}).status_code == 404
    assert c.post(BASE.format(project_id) + "/events/evt_theirs/retry",
                  data={"csrf_token": token(c, project_id)}).status_code == 404
    assert row_of(mine).status == "failed" and row_of(theirs).status == "failed"

    # Without the CSRF token: refused, nothing changes.
    assert c.post(BASE.format(project_id) + "/events/evt_mine/retry").status_code == 400
    assert row_of(mine).status == "failed"

    response = c.post(BASE.format(project_id) + "/events/evt_mine/retry",
                      data={"csrf_token": token(c, project_id), "back": "failed"})
    assert response.status_code == 302 and response.location.endswith("/webhooks/failed")
    assert row_of(mine).attempts <= 1  # started over (and maybe applied already)
    assert row_of(theirs).status == "failed" and row_of(theirs).attempts == 5


def test_retrying_an_applied_event_changes_nothing(tenant):
    project_id, _key, c = tenant
    done = stored(project_id, "evt_done", status="processed", attempts=1, error=None)
    response = c.post(BASE.format(project_id) + "/events/evt_done/retry",
                      data={"csrf_token": token(c, project_id), "back": "event"},
                      follow_redirects=True)
    assert response.status_code == 200
    assert "is not failed (processed): nothing to retry" in response.get_data(as_text=True)
    assert row_of(done).status == "processed" and row_of(done).attempts == 1


def test_retry_all_touches_only_this_projects_events(tenant, other_tenant):
    project_id, _key, c = tenant
    other_id, _okey, oc = other_tenant
    mine = [stored(project_id, "evt_a"), stored(project_id, "evt_b", status="retry",
                                                attempts=2)]
    theirs = stored(other_id, "evt_c")
    assert oc.post(BASE.format(project_id) + "/retry",
                   data={"csrf_token": token(oc, other_id)}).status_code == 404
    response = c.post(BASE.format(project_id) + "/retry",
                      data={"csrf_token": token(c, project_id), "back": "failed",
                            "window": "all"})
    assert response.status_code == 302
    assert response.location.endswith("/webhooks/failed?window=all")
    assert all(row_of(i).attempts <= 1 for i in mine)
    assert row_of(theirs).status == "failed" and row_of(theirs).attempts == 5


@pytest.fixture
def shop(wired, tenant, connect_account):
    project_id, _key, _c = tenant
    account = wired.double.create_account()
    connect_account(project_id, account)
    wired.settle()
    return project_id, account


def test_retry_from_the_page_applies_the_event_end_to_end(wired, shop, tenant, app, drain,
                                                          client):
    """A charge for a customer Stripe would not return fails five times; once Stripe
    answers again, Retry on the page applies it: the customer and event appear."""
    project_id, account = shop
    c = tenant[2]
    app.config["STRIPE_MAX_NETWORK_RETRIES"] = 0
    double = wired.double
    new = double.create_customer(account, email="late@example.com", emit=False)
    double.faults.fail_next(account, n=50, status=500)
    assert post(client, charge_event(double, account, new["id"])).status_code == 200
    drain()
    double.faults.clear()
    db.session.expire_all()
    with project_scope(project_id):
        row = db.session.scalar(select(StripeWebhookEvent).where(
            StripeWebhookEvent.project_id == project_id,
            StripeWebhookEvent.type == "charge.failed"))
    assert row.status == "failed" and row.attempts == 5
    card = c.get(f"/projects/{project_id}/integrations").get_data(as_text=True)
    assert "1 event failed in the last 24 hours" in card
    assert f'href="/projects/{project_id}/integrations/stripe/webhooks/failed"' in card
    html = c.get(BASE.format(project_id) + "/failed").get_data(as_text=True)
    assert row.event_id in html and "Stripe answered with a server error." in html

    response = c.post(BASE.format(project_id) + f"/events/{row.event_id}/retry",
                      data={"csrf_token": csrf_from(html), "back": "failed"})
    assert response.status_code == 302
    drain()
    row = row_of(row.id)
    assert row.status == "processed" and row.attempts == 1
    with project_scope(project_id):
        customer = db.session.scalar(select(Customer).where(
            Customer.project_id == project_id, Customer.email_key == "late@example.com"))
    assert customer is not None
    html = c.get(BASE.format(project_id) + "/failed").get_data(as_text=True)
    assert f'data-event-id="{row.event_id}"' not in html and "No failed events" in html
