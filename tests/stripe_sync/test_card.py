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
