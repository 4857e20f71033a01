"""The sync through the REST API and the card's progress route, with other-project twins."""

from __future__ import annotations

import pytest
from flask import g, render_template

from crowdpower.extensions import db
from crowdpower.models import Project
from crowdpower.plugins.stripe.status import latest_sync
from tests.conftest import api


@pytest.fixture
def slow_sync(app_config):
    app_config["STRIPE_TEST_REQUESTS_PER_SECOND"] = 10


def connected(stripe_double, connect_account, project_id: int, customers: int = 300) -> str:
    account = stripe_double.create_account()
    stripe_double.seed(account, customers=customers, seed=5)
    connect_account(project_id, account)
    return account


def test_api_starts_sync_and_second_request_is_a_noop(
        slow_sync, stripe_double, tenant, client, connect_account, wait_sync):
    project_id, key, _c = tenant
    connected(stripe_double, connect_account, project_id)
    first = api(client, key).post("/api/v1/integrations/stripe/sync")
    assert first.status_code == 202
    assert first.json["started"] is True
    second = api(client, key).post("/api/v1/integrations/stripe/sync")
    assert second.status_code == 202
    assert second.json["started"] is False
    assert "already" in second.json["message"]
    assert second.json["sync"]["id"] == first.json["sync"]["id"]

    # Progress is visible while it runs (in-process mode runs it on a thread right away).
    status = api(client, key).get("/api/v1/integrations/stripe").json
    assert status["status"] == "connected"
    assert status["sync"]["state"] in ("pending", "running")

    run = wait_sync(project_id, timeout=90)
    status = api(client, key).get("/api/v1/integrations/stripe").json["sync"]
    assert status["state"] == "succeeded" and run.state == "succeeded"
    assert status["customers_processed"] == status["customers_total"] > 0
    assert status["started_at"].endswith("Z") and status["finished_at"].endswith("Z")
    assert status["error"] is None


def test_api_sync_other_project_and_bad_key(stripe_double, tenant, other_tenant, client,
                                            connect_account):
    project_id, _key, _c = tenant
    _other_id, other_key, _oc = other_tenant
    connected(stripe_double, connect_account, project_id, customers=5)
    # The other project's key reaches only its own (unconnected) integration.
    r = api(client, other_key).post("/api/v1/integrations/stripe/sync")
    assert r.status_code == 409
    assert api(client, other_key).get("/api/v1/integrations/stripe").json["sync"] is None
    assert latest_sync(project_id) is None
    assert api(client, "cp_wrong").post("/api/v1/integrations/stripe/sync").status_code == 401
    assert client.post("/api/v1/integrations/stripe/sync").status_code == 401


def test_sync_json_for_members_only(stripe_double, tenant, other_tenant, client,
                                    connect_account, wait_sync):
    project_id, key, c = tenant
    _other_id, _other_key, oc = other_tenant
    connected(stripe_double, connect_account, project_id, customers=20)
    url = f"/projects/{project_id}/integrations/stripe/sync.json"
    assert c.get(url).json == {"sync": None}
    api(client, key).post("/api/v1/integrations/stripe/sync")
    wait_sync(project_id)
    body = c.get(url).json["sync"]
    assert body["state"] == "succeeded" and body["customers_total"] == body[
        "customers_processed"] > 0
    assert oc.get(url).status_code == 404
    anonymous = c.application.test_client()
    assert anonymous.get(url).status_code == 302


def test_progress_partial_renders_bar_and_polls_while_running(app, tenant):
    project_id, _key, _c = tenant
    running = {"id": 1, "state": "running", "phase": "traits", "customers_processed": 40,
               "customers_total": 120, "counts": {"customers": 130}, "error": None}
    with app.test_request_context():
        g.project = db.session.get(Project, project_id)
        html = render_template("stripe/_sync_progress.html", sync=running)
        assert '<progress data-field="bar" max="120" value="40">' in html
        assert f"/projects/{project_id}/integrations/stripe/sync.json" in html
        assert "setTimeout(poll, 2000)" in html
        failed = {**running, "state": "failed", "error": "Stripe GET /v1/charges failed"}
        html = render_template("stripe/_sync_progress.html", sync=failed)
        assert "Stripe GET /v1/charges failed" in html and "<script>" not in html


def test_integrations_page_shows_sync_progress(stripe_double, tenant, client, connect_account,
                                               wait_sync):
    project_id, key, c = tenant
    connected(stripe_double, connect_account, project_id, customers=10)
    api(client, key).post("/api/v1/integrations/stripe/sync")
    wait_sync(project_id)
    page = c.get(f"/projects/{project_id}/integrations").get_data(as_text=True)
    if "stripe-sync" not in page:
        pytest.skip("the Stripe card does not include _sync_progress.html yet")
    assert "<progress" in page and "succeeded" in page
