"""Benchmark: writing 10k customers' 19 Stripe traits through ``customers.bulk_set_traits``.

The sync's trait phase in isolation (PostgreSQL): a project already holding
``--existing`` customers' traits (COPY, then ``VACUUM ANALYZE``), then ``--customers``
new customers whose 19 traits are written in batches of 1000, as the sync writes them,
and rolled back (so every run writes into the same table). Besides wall time it reports
the CPU time of the PostgreSQL backend that did the writes (read from /proc: the server
runs on this box), which the other processes on a shared box disturb far less.

    .venv/bin/python -m bench.traits_write_bench --existing 100000 --runs 5
"""

from __future__ import annotations

import argparse
import os
import random
import time
from datetime import UTC, datetime, timedelta

import psycopg

from bench.common import append_results, create_database, drop_database, median

TICKS = os.sysconf("SC_CLK_TCK")


def traits(i: int, rng: random.Random, now: datetime) -> dict:
    """The 19 traits the Stripe plugin writes, with plausible values."""
    day = timedelta(days=1)
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    return {
        "stripe_customer_id": f"cus_{i:010d}", "stripe_customer_ids": [f"cus_{i:010d}"],
        "stripe_created_at": (now - rng.uniform(0, 730) * day).strftime(stamp),
        "stripe_livemode": True, "stripe_currency": "usd",
        "stripe_subscription_status": rng.choice(["active", "trialing", "canceled"]),
        "stripe_active_subscriptions": rng.randint(0, 2),
        "stripe_plan_name": rng.choice(["Basic", "Pro", "Team"]),
        "stripe_plan_interval": "month", "stripe_plan_amount": rng.randint(5, 500),
        "stripe_mrr": round(rng.uniform(5, 500), 2),
        "stripe_trial_end_at": (now - rng.uniform(0, 730) * day).strftime(stamp),
        "stripe_current_period_end_at": (now + rng.uniform(0, 30) * day).strftime(stamp),
        "stripe_cancel_at_period_end": rng.random() < 0.1,
        "stripe_canceled_at": (now - rng.uniform(0, 730) * day).strftime(stamp),
        "stripe_delinquent": rng.random() < 0.05,
        "stripe_total_spent": rng.randint(0, 5000), "stripe_total_refunded": 0,
        "stripe_spend_currency": "usd",
    }


def load(url: str, project_id: int, existing: int, new: int) -> None:
    """Customers 1..existing with their traits, and existing+1..existing+new without."""
    from crowdpower.customers import encode_trait

    rng, now = random.Random(7), datetime.now(UTC)
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy("COPY customers (id, project_id, email, email_key, created_at,"
                      " updated_at) FROM STDIN") as copy:
            for i in range(1, existing + new + 1):
                copy.write_row((i, project_id, f"u{i}@example.com", f"u{i}@example.com",
                                now, now))
        with cur.copy("COPY trait_values (project_id, customer_id, key, value, value_text,"
                      " value_num, source, updated_at) FROM STDIN") as copy:
            for i in range(1, existing + 1):
                for key, raw in traits(i, rng, now).items():
                    value, text, num = encode_trait(raw)
                    copy.write_row((project_id, i, key, psycopg.types.json.Jsonb(value),
                                    text, num, "stripe", now))
        cur.execute("SELECT setval('customers_id_seq', %s)", (existing + new,))
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def backend_cpu(pid: int) -> float:
    """User + system CPU seconds of a local PostgreSQL backend."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--existing", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    from sqlalchemy import text

    from crowdpower import create_app
    from crowdpower.cli import make_project
    from crowdpower.customers import bulk_set_traits
    from crowdpower.extensions import db

    name, url = create_database()
    try:
        app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench",
                          "REDIS_URL": None})
        with app.app_context():
            db.create_all()
            project_id, _ = make_project("Bench")
            db.session.commit()
            plain = "postgresql://postgres@127.0.0.1:5432/" + name
            t0 = time.perf_counter()
            load(plain, project_id, args.existing, args.customers)
            print(f"loaded {args.existing:,} customers' traits in "
                  f"{time.perf_counter() - t0:.1f}s")
            rng, now = random.Random(11), datetime.now(UTC)
            ids = range(args.existing + 1, args.existing + args.customers + 1)
            rows = [(i, traits(i, rng, now)) for i in ids]
            walls, cpus = [], []
            for _ in range(args.runs + 1):  # the first warms the caches
                pid = db.session.scalar(text("SELECT pg_backend_pid()"))
                cpu0, t = backend_cpu(pid), time.perf_counter()
                written = 0
                for start in range(0, len(rows), args.batch):
                    written += bulk_set_traits(project_id, rows[start:start + args.batch],
                                               source="stripe")
                db.session.flush()
                wall, cpu = time.perf_counter() - t, backend_cpu(pid) - cpu0
                db.session.rollback()
                assert written == 19 * args.customers, written
                walls.append(wall)
                cpus.append(cpu)
                print(f"run: {wall:.2f} s wall, {cpu:.2f} s PostgreSQL CPU")
            walls, cpus = walls[1:], cpus[1:]
            db.session.remove()
            db.engine.dispose()
    finally:
        drop_database(name)
    lines = ["| existing customers | customers written | traits | median wall (s) | runs (s) "
             "| median PostgreSQL CPU (s) | customers/s (wall) |",
             "|---:|---:|---:|---:|---|---:|---:|",
             f"| {args.existing:,} | {args.customers:,} | {19 * args.customers:,} | "
             f"{median(walls):.2f} | {', '.join(f'{w:.2f}' for w in walls)} | "
             f"{median(cpus):.2f} | {args.customers / median(walls):,.0f} |"]
    append_results("Trait writes (bulk_set_traits, PostgreSQL)", lines)


if __name__ == "__main__":
    main()
