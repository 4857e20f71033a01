"""The Integrations card: phases as steps, an honest bar, webhook health and its Retry."""

from __future__ import annotations

from datetime import timedelta

from flask import g, render_template

from crowdpower.extensions import db
from crowdpower.models import Project, utcnow
from crowdpower.plugins.stripe.models import StripeWebhookEvent
from tests.conftest import csrf_from


def render(project_id: int, sync: dict) -> str:
    g.project = db.session.get(Project, project_id)
    return render_template("stripe/_sync_progress.html", sync=sync)


def test_list_phases_are_steps_with_counts_and_the_bar_is_indeterminate(app, tenant):
    project_id, _key, _c = tenant
    sync = {"id": 1, "state": "running", "phase": "subscriptions", "customers_processed": 0,
            "customers_total": 130, "counts": {"customers": 130, "products": 4, "prices": 6,
                                               "subscriptions": 57}, "error": None}
    with app.test_request_context():
        html = render(project_id, sync)
    assert 'class="step done" data-phase="customers"' in html
    assert 'class="step current" data-phase="subscriptions"' in html
    assert 'class="step todo" data-phase="traits"' in html
    assert '<span class="step-count" data-count="subscriptions">57</span>' in html
    assert '<progress data-field="bar"></progress>' in html  # total unknown: no fake 0 %
    with app.test_request_context():
        done = render(project_id, {**sync, "state": "succeeded", "phase": "traits",
                                   "customers_processed": 130, "finished_at": None})
    assert "succeeded traits" not in done and done.count('class="step done"') == 7
    assert '<progress data-field="bar" max="1" value="1">' in done and "<script>" not in done


def _failed_event(project_id: int, event_id: str) -> int:
    row = StripeWebhookEvent(event_id=event_id, account_id="acct_x", project_id=project_id,
                             type="charge.failed", created=0, payload="{}", status="failed",
                             attempts=5, error="RuntimeError: boom",
                             received_at=utcnow() - timedelta(hours=1))
    db.session.add(row)
    db.session.commit()
    return row.id


def test_failed_webhooks_show_on_the_card_and_retry_puts_them_back(app, tenant, other_tenant):
    project_id, _key, c = tenant
    other_id, _okey, oc = other_tenant
    mine = _failed_event(project_id, "evt_mine")
    theirs = _failed_event(other_id, "evt_theirs")
    from crowdpower.plugins.stripe.card import webhook_health

    health = webhook_health(project_id)
    assert health["failed_24h"] == 1 and health["last_error"] == "RuntimeError: boom"
    page = c.get(f"/projects/{project_id}/integrations").get_data(as_text=True)
    token = csrf_from(page)
    # another project cannot retry ours (404), and its own retry leaves ours alone
    assert oc.post(f"/projects/{project_id}/integrations/stripe/webhooks/retry",
                   data={"csrf_token": csrf_from(oc.get(
                       f"/projects/{other_id}/integrations").get_data(as_text=True))}
                   ).status_code == 404
    response = c.post(f"/projects/{project_id}/integrations/stripe/webhooks/retry",
                      data={"csrf_token": token})
    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.get(StripeWebhookEvent, mine).status in ("pending", "processed",
                                                               "ignored", "failed", "retry")
    assert db.session.get(StripeWebhookEvent, mine).attempts <= 1
    assert db.session.get(StripeWebhookEvent, theirs).status == "failed"
    assert db.session.get(StripeWebhookEvent, theirs).attempts == 5


def _label_token(c, project_id: int) -> str:
    return csrf_from(c.get(f"/projects/{project_id}/integrations").get_data(as_text=True))


def test_the_card_shows_the_account_mode_and_dashboard_and_takes_a_name(
        app, tenant, other_tenant, stripe_double, connect_account):
    project_id, key, c = tenant
    other_id, _okey, oc = other_tenant
    account = stripe_double.create_account()
    connect_account(project_id, account)
    url = f"/projects/{project_id}/integrations/stripe/label"
    card = c.get(f"/projects/{project_id}/integrations").get_data(as_text=True)
    assert f"<code>{account}</code>" in card and ">test mode<" in card
    assert 'href="https://dashboard.stripe.com/test/dashboard"' in card
    assert "Name this account" in card and "account-name" not in card

    response = c.post(url, data={"csrf_token": _label_token(c, project_id),
                                 "label": "  Demo   Shop (EU) "})
    assert response.status_code == 302
    card = c.get(f"/projects/{project_id}/integrations").get_data(as_text=True)
    assert '<strong class="account-name">Demo Shop (EU)</strong>' in card
    status = c.get("/api/v1/integrations/stripe",
                   headers={"Authorization": f"Bearer {key}"}).get_json()
    assert status["label"] == "Demo Shop (EU)" and status["account_id"] == account

    # Bad input: 400 with the reason on the card, the old name kept.
    too_long = c.post(url, data={"csrf_token": _label_token(c, project_id), "label": "x" * 61})
    assert too_long.status_code == 400
    page = too_long.get_data(as_text=True)
    assert "at most 60 characters (it has 61)" in page and 'aria-invalid="true"' in page
    control = c.post(url, data={"csrf_token": _label_token(c, project_id),
                                "label": "Shop\x1bOne"})
    assert control.status_code == 400 and "control characters" in control.get_data(
        as_text=True)
    assert c.post(url, data={"label": "No token"}).status_code == 400
    # Twin: another project's member cannot name ours (404), nor does naming theirs
    # (not connected) touch ours.
    assert oc.post(url, data={"csrf_token": _label_token(oc, other_id),
                              "label": "Hijacked"}).status_code == 404
    oc.post(f"/projects/{other_id}/integrations/stripe/label",
            data={"csrf_token": _label_token(oc, other_id), "label": "Theirs"})
    card = c.get(f"/projects/{project_id}/integrations").get_data(as_text=True)
    assert "Demo Shop (EU)" in card and "Hijacked" not in card and "Theirs" not in card

    # Empty removes the name.
    c.post(url, data={"csrf_token": _label_token(c, project_id), "label": "   "})
    card = c.get(f"/projects/{project_id}/integrations").get_data(as_text=True)
    assert "account-name" not in card and "Name this account" in card


def test_a_live_connection_links_the_live_dashboard(app, tenant, stripe_double,
                                                    connect_account):
    project_id, _key, c = tenant
    connect_account(project_id, stripe_double.create_account(livemode=True), livemode=True)
    card = c.get(f"/projects/{project_id}/integrations").get_data(as_text=True)
    assert 'href="https://dashboard.stripe.com/dashboard"' in card and ">live mode<" in card
