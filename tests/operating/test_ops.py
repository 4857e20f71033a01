"""``crowdpower ops``: status, and mending one project's stuck work (through the real CLI
group, the real worker path and the double)."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo
from sqlalchemy import select

from crowdpower.cli import cli
from crowdpower.extensions import db
from crowdpower.models import Customer
from crowdpower.plugins.stripe.models import StripeSyncRun, StripeWebhookEvent
from crowdpower.tenancy import project_scope
from tests.stripe_plugin.test_webhooks import charge_event, post


@pytest.fixture
def run(app):
    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app),
                               catch_exceptions=False)
        return result

    return invoke


@pytest.fixture
def shop(wired, tenant, connect_account):
    project_id, key, _browser = tenant
    account = wired.double.create_account()
    connect_account(project_id, account)
    wired.settle()
    return project_id, account


def inbox_rows(project_id: int) -> list[StripeWebhookEvent]:
    db.session.expire_all()
    with project_scope(project_id):
        return list(db.session.scalars(select(StripeWebhookEvent).where(
            StripeWebhookEvent.project_id == project_id).order_by(StripeWebhookEvent.id)))


def test_a_failed_event_is_listed_and_retried_end_to_end(wired, shop, other_tenant, app,
                                                         drain, run, caplog):
    project_id, account = shop
    other_id = other_tenant[0]
    app.config["STRIPE_MAX_NETWORK_RETRIES"] = 0
    double = wired.double
    new = double.create_customer(account, email="late@example.com", emit=False)
    double.faults.fail_next(account, n=50, status=500)
    assert post(app.test_client(), charge_event(double, account, new["id"])).status_code == 200
    drain()
    double.faults.clear()
    [row] = [r for r in inbox_rows(project_id) if r.type == "charge.failed"]
    assert row.status == "failed" and row.attempts == 5

    status = json.loads(run("ops", "status", "--project", str(project_id)).output)
    assert status["stripe"]["inbox"][str(project_id)]["failed"] == 1
    listed = json.loads(run("ops", "events", "list", "--project", str(project_id)).output)
    assert [e["id"] for e in listed] == [row.id] and "APIError" in listed[0]["error"]
    # another project sees none of it, and retrying there touches nothing
    assert json.loads(run("ops", "events", "list", "--project", str(other_id)).output) == []
    assert json.loads(run("ops", "events", "retry", "--project", str(other_id)).output) \
        == {"retried": []}
    refused = run("ops", "events", "retry", "--project", str(other_id), "--id", str(row.id))
    assert refused.exit_code == 2
    assert f"no failed event {row.id} in project {other_id}" in refused.output
    assert inbox_rows(project_id)[-1].status == "failed"

    with caplog.at_level(logging.INFO, logger="crowdpower.ops"):
        out = json.loads(run("ops", "events", "retry", "--project", str(project_id)).output)
    assert out == {"retried": [{"id": row.id, "event_id": row.event_id}]}
    assert any("stripe.events.retry" in r.getMessage() and f"project={project_id}"
               in r.getMessage() for r in caplog.records)
    drain()
    [row] = [r for r in inbox_rows(project_id) if r.type == "charge.failed"]
    assert row.status == "processed" and row.attempts == 1
    with project_scope(project_id):
        assert db.session.scalar(select(Customer).where(
            Customer.project_id == project_id,
            Customer.email_key == "late@example.com")) is not None


def test_missing_project_is_a_clear_error(run):
    result = run("ops", "events", "list", "--project", "987654")
    assert result.exit_code == 2 and "no project 987654" in result.output


def test_sync_cancel_and_resume(wired, shop, run, drain, other_tenant):
    project_id, account = shop
    from crowdpower.models import utcnow

    with project_scope(project_id):  # a stuck run: its worker died mid-slice
        run_row = StripeSyncRun(project_id=project_id, state="running", reason="test",
                                phase="customers", counts={}, cursors={}, api_calls=0,
                                customers_processed=0, attempts=1, started_at=utcnow(),
                                heartbeat_at=utcnow())
        db.session.add(run_row)
        db.session.commit()
    assert json.loads(run("ops", "sync", "cancel", "--project", str(other_tenant[0])).output) \
        == {"cancelled": []}
    out = json.loads(run("ops", "sync", "cancel", "--project", str(project_id)).output)
    assert out == {"cancelled": [run_row.id]}
    db.session.expire_all()
    with project_scope(project_id):
        cancelled = db.session.get(StripeSyncRun, run_row.id)
        assert cancelled.state == "failed" and "operator" in cancelled.error
    status = json.loads(run("ops", "status").output)
    assert [s["id"] for s in status["stripe"]["syncs_failed"]] == [run_row.id]
    out = json.loads(run("ops", "sync", "resume", "--project", str(project_id)).output)
    assert out["started"] is True
    drain()
    db.session.expire_all()
    with project_scope(project_id):
        assert db.session.get(StripeSyncRun, out["run"]).state == "succeeded"
    assert json.loads(run("ops", "status").output)["stripe"]["syncs_failed"] == []
