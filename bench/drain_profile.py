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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--pyinstrument", action="store_true")
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
        store(app, events)
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
        t0 = time.perf_counter()
        handled = 0
        while True:
            n = jobs.execute("crowdpower.plugins.stripe.inbox.drain_inbox", project_id, [], {})
            handled += n
            if n == 0:
                break
        seconds = time.perf_counter() - t0
        assert drain_inbox  # imported for its module (the dotted name above)
        if args.pyinstrument:
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
              f"events/s (in-process, profiler on); inbox {counts}; {recorded} events "
              "recorded")
    finally:
        double.stop()
        drop_database(name)


if __name__ == "__main__":
    main()
