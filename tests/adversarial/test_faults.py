"""Faults, counted: every event and message in comes out exactly once.

Worker SIGKILL mid-sync and mid-drain, Redis unreachable when a webhook is acknowledged
and when an event's automations are dispatched, PostgreSQL down (a throwaway cluster
this test starts and stops). PostgreSQL mode only: it needs real RQ queues (work waits
in Redis until a worker takes it) and runs once per CI run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from glob import glob

import pytest
import stripe
from sqlalchemy import func, select

from crowdpower import create_app, jobs
from crowdpower.automations.models import Message, PendingDispatch
from crowdpower.customers import record_event, upsert_customer
from crowdpower.extensions import db
from crowdpower.models import Event
from crowdpower.plugins.stripe.models import StripeSyncRun, StripeWebhookEvent
from crowdpower.plugins.stripe.status import latest_sync
from crowdpower.tenancy import project_scope, unscoped
from tests.conftest import BACKEND, STRIPE_WEBHOOK_SECRET, api
from tests.stripe_plugin.conftest import wired  # noqa: F401
from tests.stripe_sync.conftest import start_sync, wait_sync  # noqa: F401
from tests.stripe_sync.expected import account_objects, actual_traits, expected_traits

pytestmark = pytest.mark.skipif(BACKEND != "postgres",
                                reason="fault suite runs once, in the PostgreSQL mode")
WEBHOOK = "/integrations/stripe/webhook"
FAILED = "Stripe Charge Failed"


def _signed_post(client, body: bytes):
    header = stripe.WebhookSignature.generate_signature_header(body.decode(),
                                                               STRIPE_WEBHOOK_SECRET)
    return client.post(WEBHOOK, data=body, headers={"Stripe-Signature": header,
                                                    "Content-Type": "application/json"})


def _counts(project_id: int) -> tuple[int, int, int]:
    """(events recorded, distinct Stripe event ids among them, messages)."""
    db.session.expire_all()
    with project_scope(project_id):
        events = db.session.scalars(select(Event.external_id).where(
            Event.project_id == project_id, Event.name == FAILED)).all()
        messages = db.session.scalar(select(func.count()).select_from(Message).where(
            Message.project_id == project_id))
    return len(events), len(set(events)), messages


def _automation(client, key: str) -> None:
    r = api(client, key).post("/api/v1/automations", json={
        "name": "Dunning", "trigger": FAILED, "subject": "Payment failed",
        "text": "{{ event.properties.amount }}"})
    assert r.status_code == 201, r.json


def _settle_everything(app, drain, project_id: int, rounds: int = 20) -> None:
    """Run the sweepers and every job until the inbox and the backlog are empty."""
    app.config["STRIPE_SWEEP_AFTER_SECONDS"] = 0
    app.config["AUTOMATION_DISPATCH_SWEEP_AFTER"] = 0
    for _ in range(rounds):
        jobs.enqueue("crowdpower.plugins.stripe.inbox.sweep_inbox", queue="stripe.webhooks")
        jobs.enqueue("crowdpower.automations.engine.sweep_dispatches", queue="automations.dispatch")
        db.session.commit()
        drain()
        db.session.expire_all()
        with unscoped():
            open_rows = db.session.scalar(select(func.count()).select_from(
                StripeWebhookEvent).where(StripeWebhookEvent.status.in_(("pending", "retry"))))
            backlog = db.session.scalar(select(func.count()).select_from(PendingDispatch))
        if not open_rows and not backlog:
            return
        time.sleep(0.2)
    raise AssertionError(f"still open: {open_rows} inbox rows, {backlog} dispatches")


@pytest.fixture
def billing(wired, tenant, connect_account):  # noqa: F811
    """A connected project with one customer and a dunning automation."""
    project_id, key, browser = tenant
    double = wired.double
    account = double.create_account()
    connect_account(project_id, account)
    cus = double.create_customer(account, email="ann@example.com", name="Ann")
    wired.settle()
    _automation(browser, key)
    return project_id, key, account, cus


def _fail_charges(double, account: str, customer: str, n: int) -> list[dict]:
    return [double.create_charge(account, customer, 1000 + i, "usd", status="failed")
            for i in range(n)]


# -- worker SIGKILL mid-drain -----------------------------------------------------------

def _drain_process(app, project_id: int) -> subprocess.Popen:
    keys = ("SQLALCHEMY_DATABASE_URI", "REDIS_URL", "RQ_QUEUE_PREFIX", "SECRET_KEY",
            "STRIPE_SECRET_KEY", "STRIPE_CLIENT_ID", "STRIPE_API_BASE", "STRIPE_CONNECT_BASE",
            "STRIPE_WEBHOOK_SECRET", "STRIPE_TEST_REQUESTS_PER_SECOND")
    config = {k: app.config.get(k) for k in keys}
    # Small batches: each is its own transaction, so the kill lands between or inside one.
    config.update({"STRIPE_WEBHOOK_DRAIN_SECONDS": 120, "STRIPE_WEBHOOK_BATCH": 5,
                   "TESTING": True})
    code = ("import json, os, sys\n"
            "from crowdpower import create_app, jobs\n"
            "app = create_app(json.loads(os.environ['DRAIN_CONFIG']))\n"
            "jobs.set_worker_app(app)\n"
            "jobs.execute('crowdpower.plugins.stripe.inbox.drain_inbox', int(sys.argv[1]),"
            " [], {})\n")
    env = {**os.environ, "DRAIN_CONFIG": json.dumps(config)}
    return subprocess.Popen([sys.executable, "-c", code, str(project_id)], env=env)


def test_worker_killed_mid_drain_loses_and_duplicates_nothing(wired, billing, app, drain):  # noqa: F811
    project_id, _key, account, cus = billing
    n = 120
    _fail_charges(wired.double, account, cus["id"], n)
    wired.double.webhooks.flush(60)  # acknowledged and stored; no worker has run yet
    with unscoped():
        assert db.session.scalar(select(func.count()).select_from(StripeWebhookEvent).where(
            StripeWebhookEvent.type == "charge.failed")) == n
    proc = _drain_process(app, project_id)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _counts(project_id)[0] < 10:
            assert proc.poll() is None, "the drain ended before it could be killed"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    recorded_at_kill = _counts(project_id)[0]
    assert 0 < recorded_at_kill < n
    _settle_everything(app, drain, project_id)
    assert _counts(project_id) == (n, n, n)


# -- worker SIGKILL mid-sync, picked up by the sweeper ----------------------------------

def test_worker_killed_mid_sync_is_resumed_by_the_sweeper(
        stripe_double, app, tenant, connect_account, wait_sync):  # noqa: F811
    from tests.stripe_sync.test_sync_faults import _job_process

    project_id, _key, _c = tenant
    app.config["STRIPE_SYNC_LEASE_SECONDS"] = 1  # an orphan is seen after 3 s
    account = stripe_double.create_account()
    stripe_double.seed(account, customers=300, seed=7)
    connect_account(project_id, account)
    with project_scope(project_id):
        run = StripeSyncRun(project_id=project_id, state="pending", reason="api",
                            counts={}, cursors={})
        db.session.add(run)
        db.session.commit()
        run_id = run.id
    proc = _job_process(app, project_id, run_id)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            db.session.expire_all()
            if (latest_sync(project_id).counts or {}).get("customers", 0) >= 100:
                break
            assert proc.poll() is None, "the sync ended before it could be killed"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    db.session.expire_all()
    assert latest_sync(project_id).state == "running"
    from crowdpower.plugins.stripe.sync_sweeper import sweep_syncs

    assert sweep_syncs() == 0  # not yet: the heartbeat is fresh
    time.sleep(3.5)
    assert sweep_syncs() == 1
    db.session.commit()
    run = wait_sync(project_id, timeout=90)
    assert run.id == run_id and run.state == "succeeded", run.error
    objects = account_objects(account)
    assert run.counts["customers"] == len(objects["customer"])
    assert actual_traits(project_id) == expected_traits(account)


def test_sync_requested_while_redis_was_down_is_queued_by_the_sweeper(
        stripe_double, app, tenant, connect_account, wait_sync):  # noqa: F811
    from datetime import timedelta

    from crowdpower.models import utcnow
    from crowdpower.plugins.stripe.sync_sweeper import sweep_syncs

    project_id, _key, _c = tenant
    account = stripe_double.create_account()
    stripe_double.seed(account, customers=20, seed=3)
    connect_account(project_id, account)
    with project_scope(project_id):  # what request_sync leaves when its enqueue failed
        db.session.add(StripeSyncRun(project_id=project_id, state="pending", reason="api",
                                     counts={}, cursors={},
                                     created_at=utcnow() - timedelta(minutes=5)))
        db.session.commit()
    assert sweep_syncs() == 1
    assert sweep_syncs() == 0  # one job waiting per run
    db.session.commit()
    assert wait_sync(project_id).state == "succeeded"
    assert actual_traits(project_id) == expected_traits(account)


# -- Redis unreachable at ack and at dispatch -------------------------------------------

def _broken_app(app):
    return create_app({**{k: app.config[k] for k in (
        "SQLALCHEMY_DATABASE_URI", "SECRET_KEY", "STRIPE_SECRET_KEY", "STRIPE_CLIENT_ID",
        "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE", "STRIPE_CONNECT_BASE")},
        "TESTING": True, "REDIS_URL": "redis://127.0.0.1:1/0", "RQ_QUEUE_PREFIX": "dead:"})


def test_redis_unreachable_at_ack_and_at_dispatch(wired, billing, app, drain):  # noqa: F811
    project_id, _key, account, cus = billing
    broken = _broken_app(app)
    n = 20
    wired.double.webhooks.configure(url=None, secrets=[STRIPE_WEBHOOK_SECRET])
    bodies = [json.dumps(wired.double.emit(account, "charge.failed", charge)).encode()
              for charge in [wired.double.create_charge(account, cus["id"], 500 + i, "usd",
                                                        status="failed", emit=False)
                             for i in range(n)]]
    with broken.app_context():
        client = broken.test_client()
        assert [_signed_post(client, b).status_code for b in bodies] == [200] * n
    # The same failure when an event is recorded and its automations are to be asked:
    with broken.app_context():
        with project_scope(project_id):
            customer, _ = upsert_customer(project_id, "bob@example.com", "Bob")
            for i in range(n):
                record_event(project_id, customer.id, FAILED, {"amount": i},
                             source="test", external_id=f"manual-{i}")
            db.session.commit()
        with unscoped():
            assert db.session.scalar(select(func.count()).select_from(PendingDispatch)) == n
        db.session.remove()
    _settle_everything(app, drain, project_id)
    # n webhooks acknowledged by the app without Redis, n events recorded by hand:
    # each recorded once and messaged once
    assert _counts(project_id) == (2 * n, 2 * n, 2 * n)


# -- PostgreSQL down --------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def throwaway_postgres():
    """A PostgreSQL cluster of our own (we stop and start it), as the postgres user."""
    initdb = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdb or shutil.which("runuser") is None:
        pytest.skip("no PostgreSQL server binaries here")
    bindir = os.path.dirname(initdb[-1])
    root = tempfile.mkdtemp(prefix="cp-pg-")
    os.chmod(root, 0o777)
    data, port = os.path.join(root, "data"), _free_port()

    def as_postgres(*cmd: str) -> None:
        user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*user, *cmd], check=True, capture_output=True, timeout=120)

    as_postgres(f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres")

    def start() -> None:
        as_postgres(f"{bindir}/pg_ctl", "-D", data, "-w", "-l", f"{root}/log",
                    "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")

    def stop() -> None:
        as_postgres(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")

    start()
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", start, stop
    finally:
        try:
            stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(root, ignore_errors=True)


def test_postgres_down_answers_503_and_loses_nothing(stripe_double, app, throwaway_postgres):
    url, start, stop = throwaway_postgres

    other = create_app({**{k: app.config[k] for k in (
        "SECRET_KEY", "STRIPE_SECRET_KEY", "STRIPE_CLIENT_ID", "STRIPE_WEBHOOK_SECRET",
        "STRIPE_API_BASE", "STRIPE_CONNECT_BASE")}, "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": url, "REDIS_URL": None, "JOB_RETRY_INTERVALS": [0, 0, 0],
        "STRIPE_SWEEP_AFTER_SECONDS": 0, "STRIPE_TEST_REQUESTS_PER_SECOND": 0,
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True}})
    account = stripe_double.create_account()
    cus = stripe_double.create_customer(account, email="ann@example.com")
    jobs.set_worker_app(other)  # in-process jobs of this app run against its database
    try:
        _against_throwaway(other, stripe_double, account, cus, start, stop)
    finally:
        jobs.set_worker_app(app)


def _against_throwaway(other, stripe_double, account, cus, start, stop) -> None:
    from crowdpower.cli import make_project
    from crowdpower.plugins.stripe.models import StripeConnection

    with other.app_context():
        db.create_all()
        project_id, key = make_project("Down")
        from crowdpower import integrations

        with project_scope(project_id):
            db.session.add(StripeConnection(project_id=project_id, status="connected",
                                            stripe_user_id=account, active_account_id=account,
                                            livemode=False))
            integrations.enable(project_id, "stripe")
            db.session.commit()
        client = other.test_client()
        bodies = [json.dumps(stripe_double.emit(account, "charge.failed",
                                                stripe_double.create_charge(
                                                    account, cus["id"], 700 + i, "usd",
                                                    status="failed", emit=False))).encode()
                  for i in range(10)]
        assert [_signed_post(client, b).status_code for b in bodies[:5]] == [200] * 5
        jobs.drain(other, 30)
        stop()
        statuses = [_signed_post(client, b).status_code for b in bodies[5:]]
        assert statuses == [503] * 5  # Stripe retries these
        assert api(client, key).get("/api/v1/customers").status_code == 503
        start()
        # Stripe's retries, plus one duplicate delivery of an event already stored
        assert [_signed_post(client, b).status_code for b in [*bodies[5:], bodies[0]]] \
            == [200] * 6
        jobs.drain(other, 30)
        from crowdpower.plugins.stripe.inbox import sweep_inbox

        sweep_inbox()
        jobs.drain(other, 30)
        db.session.expire_all()
        with project_scope(project_id):
            ids = db.session.scalars(select(Event.external_id).where(
                Event.project_id == project_id, Event.name == FAILED)).all()
        with unscoped():
            rows = db.session.execute(select(StripeWebhookEvent.status,
                                             StripeWebhookEvent.error)).all()
        assert sorted(ids) == sorted(json.loads(b)["id"] for b in bodies), rows
        db.session.remove()
        db.engine.dispose()


def test_periodic_lock_honours_the_queue_prefix(app):
    import threading

    from redis import Redis

    redis = Redis.from_url(app.config["REDIS_URL"])
    prefix = app.config["RQ_QUEUE_PREFIX"]
    stop = threading.Event()
    thread = threading.Thread(target=jobs.run_periodic_jobs, args=(app, stop, redis))
    thread.start()
    time.sleep(0.5)
    stop.set()
    thread.join()
    keys = {k.decode() for k in redis.scan_iter("*crowdpower:periodic:*")}
    mine = {k for k in keys if k.startswith(prefix)}
    assert f"{prefix}crowdpower:periodic:crowdpower.automations.engine.sweep_dispatches" in mine
