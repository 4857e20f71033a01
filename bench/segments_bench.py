"""Benchmark: counts of the two Stripe segments over 100k and 1M customers (PostgreSQL).

Customers and their traits are bulk-loaded with COPY (the point is the segment query,
not the load), then ``VACUUM ANALYZE`` (as autovacuum would, so index-only scans need
no heap visits), then each segment's count is timed through the real code path
(``crowdpower.segments.count``) several times; medians are reported. Two extra rules
(a conjunction and a negation) show the cost of composed rules, and every count is
checked against the per-customer EXISTS form of the same rule.

    .venv/bin/python -m bench.segments_bench --sizes 100000 1000000 --runs 5
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime, timedelta

import psycopg

from bench.common import append_results, create_database, drop_database, median

STATUSES = ["active"] * 60 + ["trialing"] * 10 + ["past_due"] * 5 + ["canceled"] * 20 + \
    ["none"] * 5
PLANS = ["Basic", "Pro", "Team", "Enterprise"]
EXTRA_SEGMENTS = [
    {"name": "Active on Pro (all of 2)", "source": "bench",
     "rules": {"all": [{"trait": "stripe_subscription_status", "op": "eq", "value": "active"},
                       {"trait": "stripe_plan_name", "op": "eq", "value": "Pro"}]}},
    {"name": "Not canceled (neq)", "source": "bench",
     "rules": {"all": [{"trait": "stripe_subscription_status", "op": "neq",
                        "value": "canceled"}]}},
]


def load(db_name: str, project_id: int, n: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    now = datetime.now(UTC)
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
                    status = rng.choice(STATUSES)
                    created = (now - timedelta(days=rng.uniform(0, 730))).strftime(
                        "%Y-%m-%dT%H:%M:%SZ")
                    plan = rng.choice(PLANS)
                    mrr = round(rng.uniform(5, 500), 2)
                    for key, text, num in (("stripe_subscription_status", status, None),
                                           ("stripe_created_at", created, None),
                                           ("stripe_plan_name", plan, None),
                                           ("stripe_mrr", None, mrr),
                                           ("stripe_customer_id", f"cus_{i:010d}", None)):
                        value = f'"{text}"' if text is not None else str(num)
                        copy.write_row((project_id, i, key, value, text, num, "stripe", now))
            cur.execute("SELECT setval('customers_id_seq', %s)", (n,))
        conn.commit()
    with psycopg.connect(host, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def timed(fn, runs: int) -> tuple[list[float], int]:
    fn()  # warm the cache
    timings, result = [], 0
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        timings.append((time.perf_counter() - t) * 1000)
    return timings, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-extra", action="store_true", help="only the two Stripe segments")
    parser.add_argument("--no-check", action="store_true",
                        help="skip timing the EXISTS form (slow at 1M)")
    parser.add_argument("--title", default="Segment counts (PostgreSQL)")
    args = parser.parse_args()

    from sqlalchemy import func, select

    from crowdpower import create_app
    from crowdpower.cli import make_project
    from crowdpower.extensions import db
    from crowdpower.models import Customer
    from crowdpower.plugins.stripe.plugin import SEGMENTS
    from crowdpower.segments import condition, count, seed
    from crowdpower.tenancy import project_scope

    slowest: dict[int, float] = {}
    lines = ["| customers | segment | members | median count (ms) | runs (ms) "
             "| EXISTS form median (ms) |",
             "|---:|---|---:|---:|---|---:|"]
    for n in args.sizes:
        name, url = create_database()
        try:
            app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench",
                              "REDIS_URL": None})
            with app.app_context():
                db.create_all()
                project_id, _ = make_project("Bench")
                db.session.commit()
                t0 = time.perf_counter()
                load(name, project_id, n)
                print(f"loaded {n} customers in {time.perf_counter() - t0:.1f}s")
                specs = [{**s} for s in SEGMENTS] + ([] if args.no_extra else EXTRA_SEGMENTS)
                with project_scope(project_id):
                    segments = seed(project_id, specs)
                    db.session.commit()
                    for segment in segments:
                        timings, members = timed(lambda s=segment: count(s), args.runs)
                        old = "—"
                        if not args.no_check:
                            stmt = select(func.count()).select_from(Customer).where(
                                Customer.project_id == project_id, condition(segment))
                            old_timings, expected = timed(
                                lambda st=stmt: db.session.scalar(st), max(1, args.runs // 2))
                            assert expected == members, (segment.name, expected, members)
                            old = f"{median(old_timings):.1f}"
                        if segment.source != "bench":  # the product's segments
                            slowest[n] = max(slowest.get(n, 0.0), median(timings))
                        lines.append(f"| {n:,} | {segment.name} | {members:,} | "
                                     f"{median(timings):.1f} | "
                                     f"{', '.join(f'{x:.1f}' for x in timings)} | {old} |")
                        print(lines[-1])
                db.session.remove()
                db.engine.dispose()
        finally:
            drop_database(name)
    figures = {"segment_count_1m" if n == 1_000_000 else f"segment_count_{n // 1000}k": (
        ms, f"slowest of the {len(SEGMENTS)} Stripe segments, median of {args.runs} runs")
        for n, ms in slowest.items()}
    append_results(args.title, lines, figures)


if __name__ == "__main__":
    main()
