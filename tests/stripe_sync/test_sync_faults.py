"""Faults and fairness: 429 storms, 500s, failure then Resync, a killed worker, two tenants."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import func, select

from crowdpower import jobs
from crowdpower.extensions import db
from crowdpower.plugins.stripe.models import StripeCustomerLink, StripeObject, StripeSyncRun
from crowdpower.plugins.stripe.status import latest_sync
from crowdpower.tenancy import project_scope
from tests.stripe_sync.expected import account_objects, actual_traits, expected_traits
from tests.stripe_sync.test_sync_data import list_calls, pages


@pytest.fixture
def slow_sync(app_config):
    """A client-side cap of 10 requests/s, so a test can act while the sync is mid-way."""
    app_config["STRIPE_TEST_REQUESTS_PER_SECOND"] = 10


def when_run(app, project_id: int, predicate, action, timeout: float = 30.0) -> threading.Thread:
    """Call ``action()`` from another thread as soon as the latest run satisfies ``predicate``."""

    def watch() -> None:
        with app.app_context():
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                run = latest_sync(project_id)
                if run is not None and predicate(run):
                    action()
                    break
                db.session.rollback()
                time.sleep(0.01)
            db.session.remove()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def mirror_count(project_id: int) -> int:
    with project_scope(project_id):
        return db.session.query(StripeObject).filter(
            StripeObject.project_id == project_id).count()


def seeded(stripe_double, connect_account, project_id: int, customers: int, seed: int) -> str:
    account = stripe_double.create_account()
    stripe_double.seed(account, customers=customers, seed=seed)
    connect_account(project_id, account)
    return account


def test_rate_limit_storm_is_survived(stripe_double, tenant, connect_account, start_sync,
                                      wait_sync):
    project_id, _key, _c = tenant
    account = seeded(stripe_double, connect_account, project_id, 200, 3)
    stripe_double.reset_request_log()
    stripe_double.faults.rate_limit(account, per_second=4)
    start_sync(project_id)
    run = wait_sync(project_id, timeout=90)
    stripe_double.faults.clear()
    assert run.state == "succeeded", run.error
    assert run.counts.get("rate_limited", 0) > 0
    calls = sum(list_calls(stripe_double, account).values())
    objects = account_objects(account)
    minimum = sum(pages(len(objects[k])) for k in ("customer", "product", "price", "subscription",
                                                             "charge", "dispute"))
    assert calls == run.api_calls == minimum + run.counts["retries"]
    assert actual_traits(project_id) == expected_traits(account)


def test_client_side_cap_keeps_under_stripe_limit(app_config, stripe_double, tenant,
                                                  connect_account, start_sync, wait_sync):
    project_id, _key, _c = tenant
    app_config["STRIPE_TEST_REQUESTS_PER_SECOND"] = 5   # read by the job at run time
    from flask import current_app

    current_app.config["STRIPE_TEST_REQUESTS_PER_SECOND"] = 5
    account = seeded(stripe_double, connect_account, project_id, 150, 5)
    stripe_double.reset_request_log()
    stripe_double.faults.rate_limit(account, per_second=7)
    t0 = time.monotonic()
    start_sync(project_id)
    run = wait_sync(project_id, timeout=90)
    assert run.state == "succeeded", run.error
    assert run.counts.get("rate_limited", 0) == 0
    assert run.api_calls == sum(list_calls(stripe_double, account).values())
    assert time.monotonic() - t0 >= (run.api_calls - 1) / 5 * 0.9


def test_server_errors_are_retried(stripe_double, tenant, connect_account, start_sync,
                                   wait_sync):
    project_id, _key, _c = tenant
    account = seeded(stripe_double, connect_account, project_id, 150, 9)
    stripe_double.reset_request_log()
    stripe_double.faults.fail_next(account, 3)
    start_sync(project_id)
    run = wait_sync(project_id)
    assert run.state == "succeeded", run.error
    calls = sum(list_calls(stripe_double, account).values())
    objects = account_objects(account)
    minimum = sum(pages(len(objects[k])) for k in ("customer", "product", "price", "subscription",
                                                             "charge", "dispute"))
    assert run.counts["retries"] == 3
    assert run.api_calls == calls == minimum + 3
    assert actual_traits(project_id) == expected_traits(account)


def test_server_errors_are_retried_whatever_stripe_should_retry_says(
        stripe_double, tenant, connect_account, start_sync, wait_sync):
    """A list call is a GET: retrying it is safe even when a 5xx says ``false``."""
    project_id, _key, _c = tenant
    account = seeded(stripe_double, connect_account, project_id, 60, 12)
    stripe_double.reset_request_log()
    stripe_double.faults.fail_next(account, 2, status=503, should_retry=False)
    start_sync(project_id)
    run = wait_sync(project_id)
    assert run.state == "succeeded", run.error
    assert run.counts["retries"] == 2
    assert actual_traits(project_id) == expected_traits(account)


def test_failure_then_resync_continues_from_checkpoint(
        slow_sync, app, stripe_double, tenant, connect_account, start_sync, wait_sync):
    project_id, _key, _c = tenant
    account = seeded(stripe_double, connect_account, project_id, 500, 21)
    stripe_double.reset_request_log()
    watcher = when_run(app, project_id, lambda r: (r.counts or {}).get("customers", 0) >= 200,
                       lambda: stripe_double.faults.fail_next(account, 50))
    start_sync(project_id)
    failed = wait_sync(project_id, timeout=90)
    watcher.join()
    assert failed.state == "failed"
    assert "HTTP 500" in failed.error and "Resync" in failed.error
    done_pages = failed.counts["customers"] // 100
    assert done_pages >= 2 and failed.cursors["customer"]
    stripe_double.faults.clear()
    stripe_double.reset_request_log()

    run_id, started = start_sync(project_id, reason="resync")
    assert started
    run = wait_sync(project_id, timeout=90)
    assert run.id == run_id and run.state == "succeeded", run.error
    assert run.resumed_from_id == failed.id
    customer_calls = stripe_double.request_count(account=account, path="/v1/customers")
    objects = account_objects(account)
    # Only the pages after the checkpoint were fetched again.
    assert customer_calls == pages(len(objects["customer"])) - done_pages
    assert run.counts["customers"] == len(objects["customer"])
    assert actual_traits(project_id) == expected_traits(account)


def _job_process(app, project_id: int, run_id: int) -> subprocess.Popen:
    """The sync job in a separate worker process we can SIGKILL."""
    keys = ("SQLALCHEMY_DATABASE_URI", "REDIS_URL", "RQ_QUEUE_PREFIX", "SECRET_KEY",
            "STRIPE_SECRET_KEY", "STRIPE_CLIENT_ID", "STRIPE_API_BASE", "STRIPE_CONNECT_BASE",
            "STRIPE_SYNC_LEASE_SECONDS")
    config = {k: app.config.get(k) for k in keys}
    config["STRIPE_TEST_REQUESTS_PER_SECOND"] = 10
    code = ("import json, os, sys\n"
            "from crowdpower import create_app, jobs\n"
            "app = create_app(json.loads(os.environ['SYNC_CONFIG']))\n"
            "jobs.set_worker_app(app)\n"
            "jobs.execute('crowdpower.plugins.stripe.sync.run_sync', int(sys.argv[1]),"
            " [int(sys.argv[2])], {})\n")
    env = {**os.environ, "SYNC_CONFIG": json.dumps(config)}
    return subprocess.Popen([sys.executable, "-c", code, str(project_id), str(run_id)], env=env)


def test_killed_worker_resumes_with_identical_results(
        app, stripe_double, tenant, make_project, connect_account, start_sync, wait_sync):
    project_id, _key, _c = tenant
    twin_id, _ = make_project("Twin")
    account = seeded(stripe_double, connect_account, project_id, 400, 33)
    twin = seeded(stripe_double, connect_account, twin_id, 400, 33)

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
            current = latest_sync(project_id)
            if (current.counts or {}).get("customers", 0) >= 200:
                break
            assert proc.poll() is None, "the job ended before it could be killed"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    db.session.expire_all()
    killed = latest_sync(project_id)
    assert killed.state == "running" and killed.cursors.get("customer")

    # RQ retries the job with the same run id; it waits for the dead lease, then resumes.
    jobs.enqueue("crowdpower.plugins.stripe.sync.run_sync", run_id, queue="stripe.sync",
                 project_id=project_id)
    run = wait_sync(project_id, timeout=90)
    assert run.id == run_id and run.state == "succeeded", run.error
    start_sync(twin_id)
    twin_run = wait_sync(twin_id)
    assert twin_run.state == "succeeded"

    assert actual_traits(project_id) == expected_traits(account)
    assert actual_traits(twin_id) == expected_traits(twin)
    assert mirror_count(project_id) == mirror_count(twin_id)
    for phase in ("customers", "subscriptions", "charges"):
        assert run.counts[phase] == twin_run.counts[phase]
    assert run.customers_processed == twin_run.customers_processed


def test_two_tenants_syncing_at_once_stay_isolated(
        stripe_double, tenant, other_tenant, connect_account, start_sync, wait_sync):
    a_id, _a_key, _ = tenant
    b_id, _b_key, _ = other_tenant
    a = seeded(stripe_double, connect_account, a_id, 150, 1)
    b = seeded(stripe_double, connect_account, b_id, 180, 2)
    start_sync(a_id)
    start_sync(b_id)
    assert wait_sync(a_id).state == "succeeded"
    assert wait_sync(b_id).state == "succeeded"
    got_a, got_b = actual_traits(a_id), actual_traits(b_id)
    assert got_a == expected_traits(a)
    assert got_b == expected_traits(b)
    ids_a = {t["stripe_customer_id"] for t in got_a.values()}
    ids_b = {t["stripe_customer_id"] for t in got_b.values()}
    assert ids_a and ids_b and not ids_a & ids_b


def test_per_tenant_cap_defers_a_second_run(app, stripe_double, tenant, connect_account,
                                            wait_sync):
    """A run holding the tenant's only slot makes another run wait, not run alongside."""
    from crowdpower.models import utcnow
    from crowdpower.plugins.stripe.sync import Lease

    project_id, _key, _c = tenant
    seeded(stripe_double, connect_account, project_id, 50, 4)
    with project_scope(project_id):
        holder = StripeSyncRun(project_id=project_id, state="running", reason="api",
                               counts={}, cursors={}, started_at=utcnow())
        db.session.add(holder)
        db.session.commit()
        lease = Lease(project_id, holder.id)
        assert lease.acquire(holder)
        holder.heartbeat_at = utcnow()
        db.session.commit()
        waiting = StripeSyncRun(project_id=project_id, state="pending", reason="api",
                                counts={}, cursors={})
        db.session.add(waiting)
        db.session.commit()
        waiting_id = waiting.id
    jobs.enqueue("crowdpower.plugins.stripe.sync.run_sync", waiting_id, queue="stripe.sync",
                 project_id=project_id)
    db.session.commit()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        jobs.drain(app, 10)
        time.sleep(0.1)
    with project_scope(project_id):
        db.session.expire_all()
        assert db.session.get(StripeSyncRun, waiting_id).state == "pending"
        holder = db.session.get(StripeSyncRun, holder.id)
        lease.release(holder)
        holder.state = "succeeded"
        db.session.commit()
    assert wait_sync(project_id).state == "succeeded"


def test_sync_jobs_use_their_own_queue(app, stripe_double, tenant, connect_account, start_sync):
    if not app.config.get("REDIS_URL"):
        pytest.skip("queues are RQ's (postgres mode)")
    from rq import Queue

    project_id, _key, _c = tenant
    seeded(stripe_double, connect_account, project_id, 5, 1)
    start_sync(project_id)
    backend = app.extensions["crowdpower.jobs"]
    prefix = app.config["RQ_QUEUE_PREFIX"]
    assert Queue(prefix + "stripe.sync", connection=backend.redis).count == 1
    assert Queue(prefix + "stripe.webhooks", connection=backend.redis).count == 0


def test_rate_limiter_spaces_requests(app):
    from crowdpower.plugins.stripe.ratelimit import limiter

    cap = limiter(app)
    account = f"acct_rl_{time.time_ns()}"
    t0 = time.monotonic()
    for _ in range(21):
        cap.wait(account, 20)
    elapsed = time.monotonic() - t0
    assert 0.85 <= elapsed < 2.0
    t0 = time.monotonic()
    for _ in range(50):
        cap.wait(account + "_off", 0)
    assert time.monotonic() - t0 < 0.1



@pytest.fixture
def short_slices(app_config):
    """Traits batches of 20 customers and 0.2 s slices: the lists and the traits phase
    span several jobs; a list slice ends with pages fetched ahead and never written, a
    traits slice with a batch written on the helper thread, then checkpointed."""
    app_config.update({"STRIPE_SYNC_TRAITS_BATCH": 20, "STRIPE_SYNC_SLICE_SECONDS": 0.2,
                       "STRIPE_TEST_REQUESTS_PER_SECOND": 40})


def test_sync_over_many_slices_counts_each_call_and_customer_once(
        short_slices, stripe_double, tenant, connect_account, start_sync, wait_sync):
    project_id, _key, _c = tenant
    account = seeded(stripe_double, connect_account, project_id, 300, 44)
    stripe_double.reset_request_log()
    start_sync(project_id)
    run = wait_sync(project_id, timeout=120)
    assert run.state == "succeeded", run.error
    assert run.attempts > 2  # the run went through several slices
    # Pages fetched ahead when a slice ended are written by it, not fetched again; every
    # call is counted, as Stripe counts them.
    calls = list_calls(stripe_double, account)
    assert run.api_calls == sum(calls.values())
    objects = account_objects(account)
    assert calls["/v1/customers"] == pages(len(objects["customer"]))
    assert calls["/v1/charges"] == pages(len(objects["charge"]))
    with project_scope(project_id):
        linked = db.session.scalar(select(func.count(func.distinct(
            StripeCustomerLink.customer_id))).where(
            StripeCustomerLink.project_id == project_id))
    assert run.customers_processed == run.customers_total == linked
    assert run.cursors["traits"] and run.counts["write_ms"]["traits"] >= 0
    assert actual_traits(project_id) == expected_traits(account)
