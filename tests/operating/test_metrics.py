"""``/metrics`` counts what happened: scraped before and after a webhook burst, a sync
and a message send (a real RQ worker in postgres mode), with bounded labels."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import select

from crowdpower.extensions import db
from crowdpower.metrics import counter
from crowdpower.plugins.stripe.models import StripeSyncRun
from crowdpower.tenancy import project_scope
from tests.conftest import api
from tests.operating.conftest import scrape, value


@pytest.fixture
def shop(wired, tenant, connect_account):
    project_id, key, _browser = tenant
    double = wired.double
    account = double.create_account()
    connect_account(project_id, account)
    cus = double.create_customer(account, email="ann@example.com", name="Ann")
    wired.settle()
    return project_id, key, account, cus


def test_counters_move_by_what_happened(wired, shop, client):
    project_id, key, account, cus = shop
    before = scrape(client)
    # a message send: an email automation on charges, no SMTP -> the outbox
    created = api(client, key).post("/api/v1/automations", json={
        "name": "Thanks", "trigger": "Stripe Charge Succeeded", "subject": "Thanks",
        "text": "Thank you {{ customer.name }}"})
    assert created.status_code == 201, created.json
    delivered_before = len(wired.double.webhooks.delivered())
    for amount in (500, 600, 700, 800, 900):  # the burst
        wired.double.create_charge(account, cus["id"], amount, "usd")
    wired.settle()
    deliveries = wired.double.webhooks.delivered()[delivered_before:]
    assert deliveries and all(d["status"] == 200 for d in deliveries)
    charges = [d for d in deliveries if d["type"] == "charge.succeeded"]
    assert len(charges) == 5

    after = scrape(client)
    moved = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)  # noqa: E731
    assert moved("crowdpower_stripe_webhook_acks_total", outcome="accepted") == len(deliveries)
    assert moved("crowdpower_stripe_events_applied_total", type="charge.succeeded",
                 status="processed") == 5
    assert moved("crowdpower_messages_total", state="outbox", channel="email") == 5
    assert value(after, "crowdpower_stripe_inbox_rows", status="pending") == 0
    assert value(after, "crowdpower_stripe_inbox_oldest_pending_age_seconds") == 0
    assert value(after, "crowdpower_message_rows", state="outbox", channel="email") == 5
    drains = moved("crowdpower_job_duration_seconds_count", job="crowdpower.plugins.stripe."
                   "inbox.drain_inbox", outcome="succeeded",
                   queue="stripe.webhooks" if client.application.config.get("REDIS_URL")
                   else "inprocess")
    assert drains >= 1

    # a sync
    before = after
    started = api(client, key).post("/api/v1/integrations/stripe/sync")
    assert started.status_code in (200, 202), started.json
    wired.settle()
    db.session.expire_all()
    with project_scope(project_id):
        run = db.session.scalars(select(StripeSyncRun).where(
            StripeSyncRun.project_id == project_id).order_by(StripeSyncRun.id.desc())).first()
    assert run.state == "succeeded", run.error
    after = scrape(client)
    moved = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)  # noqa: E731
    assert moved("crowdpower_stripe_sync_runs_total", outcome="succeeded") == 1
    assert moved("crowdpower_stripe_sync_objects_total", kind="customer") == 1
    assert moved("crowdpower_stripe_sync_objects_total", kind="charge") == 5
    assert moved("crowdpower_stripe_api_calls_total", outcome="ok") == run.api_calls
    assert value(after, "crowdpower_stripe_sync_runs_by_state", state="succeeded") >= 1
    assert value(after, "crowdpower_scrape_collector_errors") == 0
    # no customer, account or event id anywhere in the exposition
    text = client.get("/metrics").get_data(as_text=True)
    assert cus["id"] not in text and account not in text and "ann@example.com" not in text


def test_metrics_need_the_token_when_one_is_set(app, client):
    app.config["METRICS_TOKEN"] = "m" * 32
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert scrape(client, token="m" * 32) is not None


def test_metrics_without_a_token_answer_loopback_clients_only(app, client):
    app.config["METRICS_TOKEN"] = None
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 403
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200


def test_unbounded_labels_are_refused_when_declared():
    with pytest.raises(ValueError, match="unbounded"):
        counter("crowdpower_bad_things", "Bad.", ["customer_id"])
    with pytest.raises(ValueError, match="crowdpower_"):
        counter("bad_things", "Bad.")


def test_healthz_and_readyz_and_metrics_are_counted_as_responses(client):
    before = scrape(client)
    client.get("/healthz")
    after = scrape(client)
    assert value(after, "crowdpower_http_requests_total", blueprint="health", status="2xx") \
        - value(before, "crowdpower_http_requests_total", blueprint="health", status="2xx") == 1


@pytest.mark.skipif(os.environ.get("CROWDPOWER_TEST_BACKEND") != "postgres",
                    reason="RQ workers in their own processes need Redis")
def test_a_separate_worker_process_adds_its_counts(wired, shop, app, app_config, client,
                                                   tmp_path, stripe_double):
    """Multiprocess mode: a ``crowdpower worker`` process writes its values to
    PROMETHEUS_MULTIPROC_DIR, and a scrape of the web process adds them up."""
    project_id, _key, account, cus = shop
    app.config["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    before = scrape(client)
    for amount in (100, 200, 300):
        wired.double.create_charge(account, cus["id"], amount, "usd")
    wired.double.webhooks.flush(30)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "CROWDPOWER_DEV": "1",
           "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
           "REDIS_URL": app.config["REDIS_URL"], "RQ_QUEUE_PREFIX": app.config["RQ_QUEUE_PREFIX"],
           "SECRET_KEY": app.config["SECRET_KEY"],
           **{k: str(v) for k, v in app_config.items()
              if k.startswith("STRIPE_") and v is not None}}
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "crowdpower"), "worker", "--burst",
                           "--simple"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(tmp_path.glob("counter_*.db"))  # the worker's own files
    after = scrape(client)
    moved = value(after, "crowdpower_stripe_events_applied_total", type="charge.succeeded",
                  status="processed") - value(before, "crowdpower_stripe_events_applied_total",
                                              type="charge.succeeded", status="processed")
    assert moved == 3
    assert value(after, "crowdpower_stripe_inbox_rows", status="pending") == 0


def test_login_throttle_hits_are_counted(app, client, make_project, make_user):
    from tests.adversarial.test_login import _attempt

    project_id, _key = make_project("Acme")
    make_user("ann@acme.test", project_id)
    before = value(scrape(client), "crowdpower_login_throttled_total")
    for i in range(10):
        assert _attempt(client, "ann@acme.test", "wrong", addr=f"10.0.0.{i}").status_code == 401
    for i in range(3):
        assert _attempt(client, "ann@acme.test", "wrong", addr=f"10.0.1.{i}").status_code == 429
    assert value(scrape(client), "crowdpower_login_throttled_total") - before == 3
