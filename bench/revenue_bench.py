"""Benchmark: the daily MRR snapshot job over 100k and 1M customers (PostgreSQL).

Customers and their ``stripe_mrr`` / ``stripe_currency`` traits are COPYed in (85% paying,
a tenth of them in EUR), then ``VACUUM ANALYZE``. Day 1's snapshot is the baseline; then
5% of the customers change MRR (up, down, or to zero) and day 2's snapshot is taken,
with its movements; day 2 is then re-taken (the hourly re-run, replacing the day's rows)
``--runs`` times. Every run goes through the real job code
(``crowdpower.revenue.snapshot.take_snapshot``) and is checked against the expected
movement counts. Target: under 60 s for 1M customers.

    .venv/bin/python -m bench.revenue_bench --sizes 100000 1000000 --runs 3
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, date, datetime, timedelta

import psycopg

from bench.common import append_results, create_database, drop_database, median


def load(db_name: str, project_id: int, n: int, seed: int = 11) -> int:
    """COPY ``n`` customers with MRR traits; returns how many pay (MRR > 0)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    paying = 0
    host = "postgresql://postgres@127.0.0.1:5432/" + db_name
    with psycopg.connect(host) as conn:
        with conn.cursor() as cur:
            with cur.copy("COPY customers (id, project_id, email, email_key, name, created_at,"
                          " updated_at) FROM STDIN") as copy:
                for i in range(1, n + 1):
                    email = f"user{i}@example.com"
                    copy.write_row((i, project_id, email, email, f"User {i}", now, now))
            with cur.copy("COPY trait_values (project_id, customer_id, key, value, value_text,"
                          " value_num, source, updated_at) FROM STDIN") as copy:
                for i in range(1, n + 1):
                    mrr = round(rng.uniform(5, 500), 2) if rng.random() < 0.85 else 0.0
                    paying += mrr > 0
                    currency = "eur" if rng.random() < 0.1 else "usd"
                    copy.write_row((project_id, i, "stripe_mrr", str(mrr), None, mrr,
                                    "stripe", now))
                    copy.write_row((project_id, i, "stripe_currency", f'"{currency}"',
                                    currency, None, "stripe", now))
            cur.execute("SELECT setval('customers_id_seq', %s)", (n,))
        conn.commit()
    with psycopg.connect(host, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return paying


def change(db_name: str, project_id: int) -> None:
    """5% of customers move: +20%, -20%, or to zero (churn), or from zero (new)."""
    host = "postgresql://postgres@127.0.0.1:5432/" + db_name
    with psycopg.connect(host, autocommit=True) as conn:
        conn.execute("""UPDATE trait_values SET value_num = CASE (customer_id / 20) %% 4
            WHEN 0 THEN value_num * 1.2 WHEN 1 THEN value_num * 0.8 WHEN 2 THEN 0
            ELSE CASE WHEN value_num = 0 THEN 42 ELSE value_num * 1.1 END END
            WHERE project_id = %s AND key = 'stripe_mrr' AND customer_id %% 20 = 0""",
                     (project_id,))
        conn.execute("VACUUM ANALYZE trait_values")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--title", default="Revenue snapshot job (PostgreSQL)")
    args = parser.parse_args()

    from sqlalchemy import text

    from crowdpower import create_app, integrations
    from crowdpower.cli import make_project
    from crowdpower.extensions import db
    from crowdpower.revenue.snapshot import take_snapshot
    from crowdpower.tenancy import project_scope

    lines = ["| customers | paying | day | movements | seconds (median) | runs (s) |",
             "|---:|---:|---|---:|---:|---|"]
    day1, day2 = date.today() - timedelta(days=1), date.today()
    for n in args.sizes:
        name, url = create_database()
        try:
            app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench",
                              "REDIS_URL": None})
            with app.app_context():
                db.create_all()
                project_id, _ = make_project("Bench")
                with project_scope(project_id):
                    integrations.enable(project_id, "stripe")
                db.session.commit()
                t0 = time.perf_counter()
                paying = load(name, project_id, n)
                print(f"loaded {n:,} customers ({paying:,} paying) in "
                      f"{time.perf_counter() - t0:.1f}s")
                with project_scope(project_id):
                    t = time.perf_counter()
                    first = take_snapshot(project_id, day1)
                    baseline = time.perf_counter() - t
                    assert first["customers"] == paying and first["movements"] == 0
                    lines.append(f"| {n:,} | {paying:,} | first (baseline) | 0 | "
                                 f"{baseline:.2f} | {baseline:.2f} |")
                    print(lines[-1])
                    change(name, project_id)
                    timings, moved = [], 0
                    for _ in range(args.runs):
                        t = time.perf_counter()
                        result = take_snapshot(project_id, day2)
                        timings.append(time.perf_counter() - t)
                        moved = result["movements"]
                    # Every changed customer paying on either day moves exactly once.
                    expected = db.session.execute(text(
                        "SELECT count(DISTINCT customer_id) FROM mrr_snapshots WHERE "
                        "project_id = :p AND customer_id % 20 = 0"), {"p": project_id}).scalar()
                    assert moved == expected, (moved, expected)
                    lines.append(f"| {n:,} | {result['customers']:,} | next (movements; "
                                 f"re-runs replace the day) | {moved:,} | "
                                 f"{median(timings):.2f} | "
                                 f"{', '.join(f'{x:.2f}' for x in timings)} |")
                    print(lines[-1])
                db.session.remove()
                db.engine.dispose()
        finally:
            drop_database(name)
    append_results(args.title, lines)


if __name__ == "__main__":
    main()
