"""Profile one inbox drain in-process (PostgreSQL + Redis, no HTTP): where the time goes.

Stores a mixed backlog (``bench.mixed_events``) straight into the inbox with the
endpoint's own statement, then runs ``drain_inbox`` in this process under cProfile (or
pyinstrument with ``--pyinstrument``, if installed) until the inbox is empty, and prints
events/s and the top functions by cumulative and own time. Jobs the drain queues (helpers,
automation dispatch) go to a Redis prefix no worker serves, so only the drain is measured.

    .venv/bin/python -m bench.drain_profile --events 3000 --customers 1000
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
import uuid

from sqlalchemy import text

from bench.common import REDIS_URL, create_database, drop_database
from bench.mixed_events import make_mixed_events
from bench.webhook_bench import CLIENT_ID, SECRET, setup


def store(app, events: list[tuple[str, bytes]]) -> None:
    """Insert events as the endpoint does (same statement, routed to the project)."""
    import json

    from crowdpower.plugins.stripe import mapping
    from crowdpower.plugins.stripe.webhooks import STORE_EVENT
    from crowdpower.services import db, utcnow

    with app.app_context(), db.engine.begin() as conn:
        for _id, body in events:
            event = json.loads(body)
            conn.execute(STORE_EVENT, {
                "event_id": event["id"], "account_id": event.get("account"),
                "type": event["type"], "object_key": mapping.event_object_key(event)[:200],
                "customer_stripe_id": mapping.event_customer_key(event),
                "livemode": bool(event.get("livemode")), "created": int(event["created"]),
                "payload": body.decode(), "received_at": utcnow()})


HOT_TABLES = ("stripe_webhook_events", "stripe_objects", "stripe_customer_links", "events",
              "trait_values")


class StatementTimes:
    """Wall time of each statement the drain sends, by its text; with ``explain_ms``, the
    plan of any statement slower than that (``auto_explain`` loaded into each of the
    app's connections, reporting as a notice)."""

    def __init__(self, app, explain_ms: float) -> None:
        from sqlalchemy import event

        from crowdpower.services import db

        self.by_text: dict[str, list[float]] = {}
        self.plans: list[str] = []
        with app.app_context():
            engine = db.engine
            engine.dispose()

        @event.listens_for(engine, "connect")
        def _explain(dbapi_conn, _record) -> None:
            if not explain_ms:
                return
            with dbapi_conn.cursor() as cur:
                cur.execute("LOAD 'auto_explain'")
                cur.execute(f"SET auto_explain.log_min_duration = {explain_ms}")
                cur.execute("SET auto_explain.log_level = notice")
                cur.execute("SET auto_explain.log_analyze = on")
                cur.execute("SET auto_explain.log_buffers = on")
            dbapi_conn.add_notice_handler(lambda d: self.plans.append(d.message_primary or ""))

        @event.listens_for(engine, "before_cursor_execute")
        def _start(conn, _cur, _stmt, _params, context, _many) -> None:
            context._bench_t0 = time.perf_counter()

        @event.listens_for(engine, "after_cursor_execute")
        def _end(conn, _cur, statement, _params, context, _many) -> None:
            key = " ".join(statement.split())[:110]
            self.by_text.setdefault(key, []).append(time.perf_counter() - context._bench_t0)

    def report(self, seconds: float, top: int = 25) -> None:
        total = sum(sum(v) for v in self.by_text.values())
        print(f"statements: {total:.2f} s of {seconds:.2f} s wall "
              f"({sum(len(v) for v in self.by_text.values())} executions)")
        rows = sorted(self.by_text.items(), key=lambda kv: -sum(kv[1]))[:top]
        for key, ts in rows:
            ts = sorted(ts)
            print(f"{sum(ts):7.3f} s {len(ts):6d}x  p50 {ts[len(ts) // 2] * 1e3:7.2f} ms  "
                  f"max {ts[-1] * 1e3:8.1f} ms  {key}")
        for plan in self.plans[:40]:
            print(plan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--pyinstrument", action="store_true")
    parser.add_argument("--no-profile", action="store_true",
                        help="no Python profiler (statement times only)")
    parser.add_argument("--stats", choices=("as-is", "stale", "fresh"), default="as-is",
                        help="planner statistics of the inbox when the drain starts: as "
                             "autovacuum left them; stale (analyzed empty, autovacuum off "
                             "for it: a burst right after an analyze); fresh (analyzed full)")
    parser.add_argument("--explain-ms", type=float, default=0,
                        help="print the plan (auto_explain) of statements slower than this")
    args = parser.parse_args()

    from crowdpower_stripe_double import StripeDouble

    from crowdpower import create_app, jobs
    from crowdpower.plugins.stripe.inbox import drain_inbox

    double = StripeDouble(SECRET, CLIENT_ID)
    double.start()
    name, url = create_database("crowdpower_bench_drain")
    try:
        tenants = setup(url, double, args.customers, 0)
        project_id, account = tenants["B"]
        app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench-secret",
                          "STRIPE_SECRET_KEY": SECRET, "STRIPE_CLIENT_ID": CLIENT_ID,
                          "STRIPE_API_BASE": double.base_url,
                          "STRIPE_CONNECT_BASE": double.base_url,
                          "STRIPE_TEST_REQUESTS_PER_SECOND": 0, "REDIS_URL": REDIS_URL,
                          "RQ_QUEUE_PREFIX": f"bench-profile-{uuid.uuid4().hex[:6]}:",
                          "STRIPE_WEBHOOK_DRAIN_SECONDS": 3600})
        with app.app_context():
            from crowdpower.services import db
            customers = [r[0] for r in db.session.execute(text(
                "SELECT stripe_customer_id FROM stripe_customer_links WHERE project_id = :p"),
                {"p": project_id})]
        jobs.set_worker_app(app)
        events = make_mixed_events(double, account, customers, args.events)
        if args.stats == "stale":
            with app.app_context(), db.engine.begin() as conn:
                for table in HOT_TABLES:
                    conn.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = off)"))
                conn.execute(text("ANALYZE stripe_webhook_events"))
        store(app, events)
        if args.stats == "fresh":
            with app.app_context(), db.engine.begin() as conn:
                for table in HOT_TABLES:
                    conn.execute(text(f"ANALYZE {table}"))
        times = StatementTimes(app, args.explain_ms)
        from crowdpower.services import utcnow
        started = utcnow()
        profiler = None
        if args.pyinstrument:
            from pyinstrument import Profiler
            profiler = Profiler()
            profiler.start()
        else:
            profiler = cProfile.Profile()
            profiler.enable()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        handled = 0
        while True:
            n = jobs.execute("crowdpower.plugins.stripe.inbox.drain_inbox", project_id, [], {})
            handled += n
            if n == 0:
                break
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        times.report(seconds)
        assert drain_inbox  # imported for its module (the dotted name above)
        if args.no_profile:
            pass
        elif args.pyinstrument:
            profiler.stop()
            print(profiler.output_text(unicode=False, color=False, show_all=False))
        else:
            profiler.disable()
            for key in ("cumulative", "tottime"):
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(args.top)
                print(out.getvalue())
        with app.app_context():
            from crowdpower.services import db
            counts = dict(db.session.execute(text(
                "SELECT status, count(*) FROM stripe_webhook_events GROUP BY status")).all())
            recorded = db.session.scalar(text("SELECT count(*) FROM events WHERE source = "
                                              "'stripe'"))
            names = db.session.execute(text(
                "SELECT name, count(*) FROM events WHERE source = 'stripe' AND recorded_at > "
                ":t GROUP BY name ORDER BY name"), {"t": started}).all()
            print("recorded by name:", ", ".join(f"{n} {c}" for n, c in names))
        print(f"{handled} events drained in {seconds:.2f} s = {handled / seconds:,.0f} "
              f"events/s (in-process, profiler {'off' if args.no_profile else 'on'}; "
              f"Python CPU {cpu:.2f} s); inbox {counts}; {recorded} events "
              "recorded")
    finally:
        double.stop()
        drop_database(name)


if __name__ == "__main__":
    main()
