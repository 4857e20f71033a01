"""Check: a batched drain leaves exactly what applying the events one by one leaves.

Builds one mixed backlog (``bench.mixed_events``) in an inbox, clones the database
(``CREATE DATABASE … TEMPLATE``), drains the original with ``drain_inbox`` (batches) and
the clone with ``process_event`` row by row (the per-event path), then compares inbox
outcomes, recorded events (name, customer, properties, time), traits and the mirror.
Prints the differences (none expected) and both timings.

    .venv/bin/python -m bench.drain_compare --events 3000 --customers 300
"""

from __future__ import annotations

import argparse
import time
import uuid

import psycopg
from sqlalchemy import text

from bench.common import PG_ADMIN, REDIS_URL, create_database, drop_database
from bench.drain_profile import store
from bench.mixed_events import make_mixed_events
from bench.webhook_bench import CLIENT_ID, SECRET, setup

QUERIES = {
    "inbox": "SELECT event_id, status, coalesce(error, ''), attempts FROM stripe_webhook_events",
    "events": "SELECT external_id, name, customer_id, properties::text, occurred_at "
              "FROM events WHERE source = 'stripe'",
    "traits": "SELECT customer_id, key, value::text, source FROM trait_values",
    "mirror": "SELECT kind, stripe_id, coalesce(customer_stripe_id, ''), data::text, deleted "
              "FROM stripe_objects",
}


def make_app(url: str, double):
    from crowdpower import create_app

    return create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench-secret",
                       "STRIPE_SECRET_KEY": SECRET, "STRIPE_CLIENT_ID": CLIENT_ID,
                       "STRIPE_API_BASE": double.base_url, "STRIPE_CONNECT_BASE": double.base_url,
                       "STRIPE_TEST_REQUESTS_PER_SECOND": 0, "REDIS_URL": REDIS_URL,
                       "RQ_QUEUE_PREFIX": f"bench-compare-{uuid.uuid4().hex[:6]}:",
                       "STRIPE_WEBHOOK_DRAIN_SECONDS": 3600})


def snapshot(app) -> dict[str, set[tuple]]:
    from crowdpower.services import db

    with app.app_context():
        return {k: {tuple(r) for r in db.session.execute(text(q))} for k, q in QUERIES.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--batch", type=int, default=250)
    args = parser.parse_args()

    from crowdpower_stripe_double import StripeDouble

    from crowdpower import jobs
    from crowdpower.services import db

    double = StripeDouble(SECRET, CLIENT_ID)
    double.start()
    name, url = create_database("crowdpower_bench_cmp")
    clone = name + "_one"
    try:
        project_id, account = setup(url, double, args.customers, 0)["B"]
        app = make_app(url, double)
        app.config["STRIPE_WEBHOOK_BATCH"] = args.batch
        with app.app_context():
            customers = sorted(r[0] for r in db.session.execute(text(
                "SELECT stripe_customer_id FROM stripe_customer_links")))
        store(app, make_mixed_events(double, account, customers, args.events))
        with app.app_context():
            db.engine.dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            admin.execute(f'CREATE DATABASE "{clone}" TEMPLATE "{name}"')
        one = make_app(url.rsplit("/", 1)[0] + "/" + clone, double)

        jobs.set_worker_app(app)
        t0 = time.perf_counter()
        while jobs.execute("crowdpower.plugins.stripe.inbox.drain_inbox", project_id, [], {}):
            pass
        batched_s = time.perf_counter() - t0

        jobs.set_worker_app(one)
        with one.app_context():
            ids = [r[0] for r in db.session.execute(text(
                "SELECT id FROM stripe_webhook_events WHERE status = 'pending' ORDER BY id"))]
        t0 = time.perf_counter()
        for row_id in ids:
            jobs.execute("crowdpower.plugins.stripe.inbox.process_event", project_id,
                         [row_id], {})
        single_s = time.perf_counter() - t0

        a, b = snapshot(app), snapshot(one)
        bad = 0
        for key in QUERIES:
            only_a, only_b = a[key] - b[key], b[key] - a[key]
            bad += len(only_a) + len(only_b)
            print(f"{key}: {len(a[key])} rows batched, {len(b[key])} one by one; "
                  f"{len(only_a)} only batched, {len(only_b)} only one by one")
            for row in sorted(only_a, key=str)[:5]:
                print("   batched only:", str(row)[:300])
            for row in sorted(only_b, key=str)[:5]:
                print("   one-by-one only:", str(row)[:300])
        print(f"{len(ids)} events: batched {batched_s:.2f} s ({len(ids) / batched_s:,.0f}/s), "
              f"one by one {single_s:.2f} s ({len(ids) / single_s:,.0f}/s); "
              f"{'IDENTICAL' if not bad else f'{bad} DIFFERENCES'}")
        with app.app_context():
            db.engine.dispose()
        with one.app_context():
            db.engine.dispose()
    finally:
        double.stop()
        drop_database(name)
        drop_database(clone)


if __name__ == "__main__":
    main()
