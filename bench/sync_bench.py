"""Benchmark: the Stripe initial sync against an in-process Stripe double (PostgreSQL).

Seeds one test-mode account with N customers, then runs the real sync job
(``crowdpower.plugins.stripe.sync.run_sync``) ``--runs`` times, each into a fresh
project, and reports customers/s, Stripe API calls against the page minimum, the
peak RSS growth during the sync, and the database write rate. ``--naive`` also runs
the obvious alternative (two list calls per customer, for subscriptions and charges)
once, for the ratio. The double runs in this process, so it shares the CPU.

    .venv/bin/python -m bench.sync_bench --customers 10000 --runs 3 --rate 0
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import threading
import time
from datetime import UTC, datetime

from sqlalchemy import event, func, select

from bench.common import append_results, create_database, drop_database, median

SECRET = "sk_test_bench_platform"


class RssSampler:
    """Peak resident set size of this process while running (from /proc, every 20 ms)."""

    def __init__(self) -> None:
        self.peak = self.base = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _loop(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()


class DbTimer:
    """Time spent inside the database driver, and the statements run."""

    def __init__(self, engine) -> None:
        self.seconds, self.statements = 0.0, 0
        self._starts: list[float] = []
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, *_args) -> None:
        self._starts.append(time.perf_counter())

    def _after(self, *_args) -> None:
        self.seconds += time.perf_counter() - self._starts.pop()
        self.statements += 1


def connect(project_id: int, account: str) -> None:
    """Record the connection as the OAuth callback would (and free the account first)."""
    from crowdpower import integrations
    from crowdpower.extensions import db
    from crowdpower.models import utcnow
    from crowdpower.plugins.stripe.models import StripeConnection
    from crowdpower.tenancy import unscoped

    with unscoped():
        for old in db.session.scalars(select(StripeConnection).where(
                StripeConnection.active_account_id == account)):
            old.active_account_id, old.status = None, "disconnected"
        db.session.flush()
    db.session.add(StripeConnection(
        project_id=project_id, status="connected", stripe_user_id=account,
        active_account_id=account, livemode=False, scope="read_write",
        connected_at=utcnow()))
    integrations.enable(project_id, "stripe")
    db.session.commit()


def rows_written(project_id: int) -> int:
    from crowdpower.extensions import db
    from crowdpower.models import Customer, TraitValue
    from crowdpower.plugins.stripe.models import StripeCustomerLink, StripeObject

    total = 0
    for model in (Customer, TraitValue, StripeObject, StripeCustomerLink):
        total += db.session.scalar(select(func.count()).select_from(model).where(
            model.project_id == project_id).execution_options(unscoped=True)) or 0
    return total


def backend_cpu() -> dict[int, float]:
    """User + system CPU seconds of each PostgreSQL backend connected to this database
    (read from /proc: the server runs on this box). The pool keeps the sync's connections,
    so the difference over a run is the database's work for it, which the other
    processes on a shared box disturb far less than wall time."""
    from sqlalchemy import text

    from crowdpower.extensions import db

    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in db.session.scalars(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / ticks
    db.session.commit()
    return out


def run_sync_once(app, account: str, name: str) -> dict:
    """One full sync into a fresh project, through the real job entry point."""
    from crowdpower import jobs
    from crowdpower.cli import make_project
    from crowdpower.extensions import db
    from crowdpower.plugins.stripe.models import StripeSyncRun
    from crowdpower.tenancy import project_scope

    with app.app_context():
        project_id, _ = make_project(name)
        connect(project_id, account)
        with project_scope(project_id):
            run = StripeSyncRun(project_id=project_id, state="pending", reason="bench",
                                counts={}, cursors={})
            db.session.add(run)
            db.session.commit()
            run_id = run.id
        timer = DbTimer(db.engine)
        pg_before = backend_cpu()
    with RssSampler() as rss:
        t0, cpu0 = time.perf_counter(), time.process_time()
        jobs.execute("crowdpower.plugins.stripe.sync.run_sync", project_id, [run_id], {})
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    with app.app_context(), project_scope(project_id):
        pg_after = backend_cpu()
        pg_cpu = sum(cpu - pg_before.get(pid, 0.0) for pid, cpu in pg_after.items())
        run = db.session.get(StripeSyncRun, run_id)
        assert run.state == "succeeded", (run.state, run.error)
        out = {"seconds": seconds, "api_calls": run.api_calls, "counts": dict(run.counts),
               "customers": run.customers_processed, "rss": rss.peak - rss.base,
               "db_seconds": timer.seconds, "statements": timer.statements,
               "stripe_s": (run.counts or {}).get("stripe_ms", 0) / 1000,
               "wait_s": (run.counts or {}).get("wait_ms", 0) / 1000,
               # The sync's time outside its waits for a page: what our work set the pace
               # for (mapping, linking, database writes; fetches overlapping them excluded).
               "ours_s": seconds - (run.counts or {}).get("wait_ms", 0) / 1000,
               # The old figure: wall time minus the time inside Stripe calls, summed over
               # the fetch threads. Once lists are fetched at once and our work overlaps
               # them, that sum exceeds the time we waited, and this figure means little.
               "wall_minus_stripe_s": seconds - (run.counts or {}).get("stripe_ms", 0) / 1000,
               "cpu_s": cpu, "pg_cpu_s": pg_cpu,
               "rows": rows_written(project_id)}
        event.remove(db.engine, "before_cursor_execute", timer._before)
        event.remove(db.engine, "after_cursor_execute", timer._after)
    return out


def run_naive_once(app, account: str, name: str) -> dict:
    """The per-customer alternative: customers paged, then 2 list calls per customer."""
    from crowdpower.cli import make_project
    from crowdpower.extensions import db
    from crowdpower.plugins.stripe import store
    from crowdpower.plugins.stripe.client import stripe_client
    from crowdpower.tenancy import project_scope

    calls = 0
    with app.app_context():
        project_id, _ = make_project(name)
        connect(project_id, account)
        client = stripe_client(account, max_network_retries=2)

        def get(path: str, **params) -> dict:
            nonlocal calls
            calls += 1
            return client.raw_request("get", path, stripe_account=account, **params).data

        t0 = time.perf_counter()
        with project_scope(project_id):
            cursor, customers = None, 0
            while True:
                params = {"limit": 100, **({"starting_after": cursor} if cursor else {})}
                page = get("/v1/customers", **params)
                objects = page["data"]
                now = datetime.now(UTC)
                store.upsert_objects(project_id, "customer", objects, now)
                linked = store.link_customers(project_id, objects)
                for c in objects:
                    subs = get("/v1/subscriptions", customer=c["id"], status="all", limit=100)
                    charges = get("/v1/charges", customer=c["id"], limit=100)
                    store.upsert_objects(project_id, "subscription", subs["data"], now)
                    store.upsert_objects(project_id, "charge", charges["data"], now)
                store.recompute_traits(project_id, set(linked.values()))
                db.session.commit()
                customers += len(objects)
                if not page["has_more"] or not objects:
                    break
                cursor = objects[-1]["id"]
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "api_calls": calls, "customers": customers}


def serve_double(customers: int, seed: int, conn) -> None:
    """Child process: a seeded Stripe double, serving until terminated."""
    from crowdpower_stripe_double import StripeDouble

    double = StripeDouble(secret_key=SECRET, client_id="ca_bench", webhook_url=None,
                          webhook_secrets=["whsec_bench"])
    base = double.start()
    account = double.create_account()
    t0 = time.perf_counter()
    double.seed(account, customers=customers, seed=seed)
    conn.send((base, account, time.perf_counter() - t0))
    while True:
        time.sleep(3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=0,
                        help="client-side cap in requests/s (0 = none; Stripe: 25 test, 100 live)")
    parser.add_argument("--database-url", default=None,
                        help="default: a fresh PostgreSQL database, dropped afterwards")
    parser.add_argument("--redis-url", default=None,
                        help="share the rate limiter and lease through Redis")
    parser.add_argument("--naive", action="store_true",
                        help="also time 2 list calls per customer, for comparison")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    from crowdpower import create_app, jobs
    from crowdpower.extensions import db
    # The double serves from its own process, as Stripe would: it must not share our GIL.
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    double = ctx.Process(target=serve_double, args=(args.customers, args.seed, child),
                         daemon=True)
    double.start()
    base, account, seeded_in = parent.recv()
    print(f"seeded {args.customers:,} customers in {seeded_in:.1f}s (double at {base})")

    db_name = None
    url = args.database_url
    if url is None:
        db_name, url = create_database("crowdpower_syncbench")
    try:
        app = create_app({
            "SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench", "REDIS_URL": args.redis_url,
            "RQ_QUEUE_PREFIX": "syncbench:", "STRIPE_SECRET_KEY": SECRET,
            "STRIPE_CLIENT_ID": "ca_bench", "STRIPE_API_BASE": base,
            "STRIPE_CONNECT_BASE": base, "STRIPE_TEST_REQUESTS_PER_SECOND": args.rate,
            "STRIPE_LIVE_REQUESTS_PER_SECOND": args.rate,
            "STRIPE_SYNC_SLICE_SECONDS": 24 * 3600})
        with app.app_context():
            db.create_all()
        jobs.set_worker_app(app)
        results = []
        for i in range(args.runs):
            r = run_sync_once(app, account, f"Bench {i + 1}")
            results.append(r)
            print(f"run {i + 1}: {r['customers'] / r['seconds']:.0f} customers/s, "
                  f"{r['api_calls']} calls, {r['seconds']:.1f}s, our CPU {r['cpu_s']:.2f}s, "
                  f"PostgreSQL CPU {r['pg_cpu_s']:.2f}s")
        naive = run_naive_once(app, account, "Naive") if args.naive else None
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    finally:
        double.terminate()
        if db_name:
            drop_database(db_name)

    first = results[0]
    counts = first["counts"]
    pages = sum(max(1, math.ceil(counts.get(k, 0) / 100))
                for k in ("customers", "products", "prices", "subscriptions", "charges",
                          "disputes"))
    speeds = [r["customers"] / r["seconds"] for r in results]
    lines = [
        f"{args.customers:,} Stripe customers ({counts.get('subscriptions', 0):,} subscriptions, "
        f"{counts.get('charges', 0):,} charges) → {first['customers']:,} CrowdPower customers; "
        f"rate cap {args.rate or 'off'} req/s; Redis {'on' if args.redis_url else 'off'}; "
        f"{args.runs} runs.",
        "",
        "| run | seconds | customers/s | API calls | page minimum | peak RSS growth (MB) "
        "| DB rows written | Σ time in Stripe calls, all fetch threads (s) "
        "| waiting for a page (s) | our time = seconds − waiting (s) "
        "| customers/s of our time | CPU of our process (s) | customers per CPU-second "
        "| wall − Σ Stripe calls (s; the old figure, overstates once work overlaps fetches) "
        "| PostgreSQL CPU (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(results, 1):
        lines.append(f"| {i} | {r['seconds']:.1f} | {r['customers'] / r['seconds']:,.0f} | "
                     f"{r['api_calls']:,} | {pages:,} | {r['rss'] / 2**20:.1f} | "
                     f"{r['rows']:,} | {r['stripe_s']:.1f} | {r['wait_s']:.1f} | "
                     f"{r['ours_s']:.1f} | {r['customers'] / max(r['ours_s'], 1e-9):,.0f} | "
                     f"{r['cpu_s']:.1f} | {r['customers'] / max(r['cpu_s'], 1e-9):,.0f} | "
                     f"{r['wall_minus_stripe_s']:.1f} | {r['pg_cpu_s']:.1f} |")
    ours = [r["customers"] / max(r["ours_s"], 1e-9) for r in results]
    per_cpu = [r["customers"] / max(r["cpu_s"], 1e-9) for r in results]
    lines += ["", f"Median: {median(speeds):,.0f} customers/s end to end; "
              f"{median(ours):,.0f} customers/s of our own work (the sync's time outside its "
              "waits for a page from Stripe: mapping, linking and database writes); "
              f"{median(per_cpu):,.0f} customers per CPU-second of this process (the sync's "
              "threads and the Stripe client's parsing; PostgreSQL and the double, which "
              "run in their own processes, excluded)."]
    # Write rates per phase (``counts["write_ms"]``: the time each phase spent writing
    # what it fetched), against what Stripe can deliver at its live limit of 100 req/s
    # (100 objects per page = 10,000 objects/s).
    lines += ["", "Write rate per phase (median over runs; our time only, excluding waits "
              "on Stripe):", "",
              "| phase | objects | write time (s) | objects/s | vs Stripe's live ceiling "
              "(10,000 objects/s) |", "|---|---:|---:|---:|---:|"]
    for phase in ("customers", "products", "prices", "subscriptions", "charges", "disputes",
                  "traits"):
        objects = first["customers"] if phase == "traits" else counts.get(phase, 0)
        secs = median([(r["counts"].get("write_ms") or {}).get(phase, 0) / 1000
                       for r in results])
        rate = objects / secs if secs else float("inf")
        ceiling = "(no Stripe calls)" if phase == "traits" else f"{rate / 10_000:.2f}×"
        lines.append(f"| {phase}{' (customers recomputed)' if phase == 'traits' else ''} | "
                     f"{objects:,} | {secs:.2f} | {rate:,.0f} | {ceiling} |")
    if naive:
        ratio = naive["seconds"] / median([r["seconds"] for r in results])
        lines += [f"Naive (2 list calls per customer): {naive['seconds']:.1f}s, "
                  f"{naive['customers'] / naive['seconds']:,.0f} customers/s, "
                  f"{naive['api_calls']:,} API calls "
                  f"({naive['api_calls'] / first['api_calls']:.1f}× the calls, "
                  f"{ratio:.1f}× the time)."]
    # The summary's figures: our own work at 100k (rate off), the whole sync against the
    # page floor at Stripe's live limit (pages / rate), calls against the page minimum.
    size = f"{args.customers // 1000}k" if args.customers >= 1000 else str(args.customers)
    figures = {"sync_api_calls_vs_minimum": (
        max(r["api_calls"] for r in results) / pages,
        f"{size} customers, {max(r['api_calls'] for r in results):,} calls / {pages:,} pages")}
    if not args.rate:
        key = "sync_own_work_100k" if args.customers == 100_000 else f"sync_own_work_{size}"
        figures[key] = (median(ours), f"median of {args.runs} runs (time outside waits for "
                        f"a page); {median(speeds):,.0f} customers/s end to end; "
                        f"{median(per_cpu):,.0f} customers per CPU-second of our process")
        figures[f"sync_peak_rss_growth_{size}_mb"] = (first["rss"] / 2**20, "run 1")
    else:
        floor = pages / args.rate
        ratio = median([r["seconds"] for r in results]) / floor
        lines += ["", f"Page floor at {args.rate:g} req/s: {pages:,} pages / {args.rate:g} = "
                  f"{floor:.1f} s; the median sync took {ratio:.2f}× that."]
        waited = median([r["wait_s"] for r in results])
        lines += [f"The sync waited {waited:.1f} s for pages (the rate cap, the double's "
                  "answers and the client's parsing); it was fetch-bound for "
                  f"{waited / median([r['seconds'] for r in results]):.0%} of its time."]
        figures[f"sync_vs_page_floor_{args.rate:g}rps"] = (
            ratio, f"{size} customers, median {median([r['seconds'] for r in results]):.1f} s "
            f"vs floor {floor:.1f} s; waited {waited:.1f} s for pages")
    append_results(f"Stripe initial sync, {args.customers:,} customers", lines, figures)


if __name__ == "__main__":
    main()
