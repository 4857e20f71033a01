"""The inbox drained in batches: same outcome as one by one, failures isolated, no doubles.

Events are stored through the real endpoint while the job runner is held, so they are
all pending when one drain (run here, synchronously) claims them as one batch.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import text

from crowdpower import jobs
from crowdpower.customers import get_traits
from crowdpower.extensions import db
from crowdpower.plugins.stripe import inbox as inbox_module
from crowdpower.plugins.stripe import store
from crowdpower.tenancy import project_scope
from tests.conftest import BACKEND
from tests.stripe_plugin.test_webhooks import (  # noqa: F401 - fixtures
    charge_event,
    customer_by_email,
    events,
    held,
    inbox,
    post,
    queued,
    shop,
)

DRAIN = "crowdpower.plugins.stripe.inbox.drain_inbox"


def drain_once(project_id: int) -> int:
    db.session.commit()
    handled = jobs.execute(DRAIN, project_id, [], {})
    db.session.expire_all()
    return handled


def two_drains(app, project_id: int) -> None:
    """Run two drains side by side (threads, each its own session) until the inbox is
    empty; fails on any error in either."""
    db.session.commit()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with app.app_context():
                while jobs.execute(DRAIN, project_id, [], {}):
                    pass
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []


def amount_of(row) -> int:
    return json.loads(row.payload)["data"]["object"]["amount"]


def test_a_failing_event_in_a_batch_goes_to_retry_alone(wired, shop, app, held, drain):  # noqa: F811
    project_id, _key, account, cus, _sub = shop
    app.config["STRIPE_MAX_NETWORK_RETRIES"] = 0
    double = wired.double
    # A customer we have not seen: its event needs a look-up in Stripe, which fails.
    new = double.create_customer(account, email="poison@example.com", emit=False)
    client = app.test_client()
    bodies = [charge_event(double, account, cus["id"], 100 + i) for i in range(3)]
    bodies.append(charge_event(double, account, new["id"], 700))
    bodies += [charge_event(double, account, cus["id"], 200 + i) for i in range(3)]
    assert all(post(client, body).status_code == 200 for body in bodies)
    double.faults.fail_next(account, n=50, status=500)
    assert drain_once(project_id) == 7
    rows = {amount_of(r): r for r in inbox() if r.type == "charge.failed"}
    assert rows[700].status == "retry" and rows[700].attempts == 1
    assert "500" in rows[700].error or "Error" in rows[700].error
    good = [100, 101, 102, 200, 201, 202]
    assert [(rows[a].status, rows[a].attempts) for a in good] == [("processed", 1)] * 6
    recorded = events(project_id, "Stripe Charge Failed")
    assert [e.properties["amount"] for e in recorded] == [a / 100 for a in good]
    assert customer_by_email(project_id, "poison@example.com") is None
    # Once Stripe answers, the retry applies it; nothing else is applied again.
    double.faults.clear()
    held()
    drain()
    rows = {amount_of(r): r for r in inbox() if r.type == "charge.failed"}
    assert (rows[700].status, rows[700].attempts) == ("processed", 2)
    recorded = events(project_id, "Stripe Charge Failed")
    assert sorted(e.properties["amount"] for e in recorded) == sorted(
        [a / 100 for a in good] + [7.0])
    assert customer_by_email(project_id, "poison@example.com") is not None


def test_a_batch_applies_one_customers_events_in_order(wired, shop, held, drain):  # noqa: F811
    project_id, _key, account, _cus, sub = shop
    double = wired.double
    double.update_subscription(account, sub["id"], quantity=2)
    double.update_subscription(account, sub["id"], quantity=3)
    double.update_subscription(account, sub["id"], quantity=2)
    double.webhooks.flush(10)
    assert len(inbox("pending")) == 3
    assert drain_once(project_id) == 3
    updates = events(project_id, "Stripe Subscription Updated")
    assert [e.properties["quantity"] for e in updates] == [2, 3, 2]
    # Each derived event compares with the state the events before it left.
    ups = events(project_id, "Stripe Subscription Upgraded")
    assert [(e.properties["mrr_before"], e.properties["mrr_after"]) for e in ups] \
        == [(29.0, 58.0), (58.0, 87.0)]
    [down] = events(project_id, "Stripe Subscription Downgraded")
    assert (down.properties["mrr_before"], down.properties["mrr_after"]) == (87.0, 58.0)
    ann = customer_by_email(project_id, "ann@example.com")
    traits = get_traits(project_id, [ann.id])[ann.id]
    assert traits["stripe_mrr"] == 58.0  # the newest state, not the last one applied
    held()
    drain()


def test_twins_and_redeliveries_in_one_batch_are_recorded_once(wired, shop, held, drain):  # noqa: F811
    project_id, _key, account, cus, _sub = shop
    double = wired.double
    charge = double.create_charge(account, cus["id"], 900, "usd", status="failed")
    twin = double.emit(account, "charge.failed", charge)  # another event id, same change
    double.webhooks.duplicate_next(1)  # the same event delivered twice
    double.create_charge(account, cus["id"], 1500, "usd")
    double.webhooks.flush(10)
    assert len(double.webhooks.delivered(type_="charge.succeeded")) == 2
    assert len(inbox("pending")) == 3
    assert drain_once(project_id) == 3
    assert [e.properties["amount"] for e in events(project_id, "Stripe Charge Failed")] \
        == [9.0]
    assert [e.properties["amount"] for e in events(project_id, "Stripe Charge Succeeded")] \
        == [15.0]
    assert [r.status for r in inbox() if r.event_id == twin["id"]] == ["duplicate"]
    assert Counter(r.status for r in inbox() if r.type.startswith("charge.")) \
        == {"processed": 2, "duplicate": 1}
    held()
    drain()


def test_events_the_batch_does_not_handle_are_applied_alone_in_their_place(
        wired, shop, held, drain):  # noqa: F811
    project_id, _key, account, cus, _sub = shop
    double = wired.double
    double.create_charge(account, cus["id"], 1100, "usd")
    double.update_customer(account, cus["id"], email="ann.new@example.com")
    double.create_charge(account, cus["id"], 1200, "usd")
    double.webhooks.flush(10)
    pending = [r.id for r in inbox("pending")]
    assert len(pending) == 3
    assert drain_once(project_id) == 3
    assert [(r.type, r.status, r.attempts) for r in inbox() if r.id in pending] == [
        ("charge.succeeded", "processed", 1), ("customer.updated", "processed", 1),
        ("charge.succeeded", "processed", 1)]
    assert [e.properties["amount"] for e in events(project_id, "Stripe Charge Succeeded")] \
        == [11.0, 12.0]
    held()
    drain()


@pytest.mark.skipif(BACKEND != "postgres", reason="two writers at once need PostgreSQL")
def test_two_drains_side_by_side_apply_every_event_once(wired, shop, app, held, drain):  # noqa: F811
    project_id, _key, account, cus, _sub = shop
    double = wired.double
    app.config["STRIPE_WEBHOOK_BATCH"] = 7
    others = [double.create_customer(account, email=f"c{i}@example.com")["id"]
              for i in range(3)]
    double.webhooks.flush(10)
    client = app.test_client()
    people = [cus["id"], *others]
    bodies = [charge_event(double, account, people[i % 4], 1000 + i, status="succeeded")
              for i in range(60)]
    assert all(post(client, body).status_code == 200 for body in bodies)
    two_drains(app, project_id)
    rows = [r for r in inbox() if r.type == "charge.succeeded"]
    assert len(rows) >= 60
    assert {(r.status, r.attempts) for r in rows} == {("processed", 1)}
    amounts = [e.properties["amount"] for e in events(project_id, "Stripe Charge Succeeded")]
    assert sorted(amounts) == [(1000 + i) / 100 for i in range(60)]
    # Every customer's traits are those of the whole mirror (no drain computed them from
    # a copy without the other drain's events): recomputing now changes nothing.
    ids = [customer_by_email(project_id, e).id
           for e in ("ann@example.com", "c0@example.com", "c1@example.com", "c2@example.com")]
    stored = get_traits(project_id, ids)
    spent = sorted(stored[i]["stripe_total_spent"] for i in ids)
    assert sum(spent) == pytest.approx(sum(amounts))
    with project_scope(project_id):
        store.recompute_traits(project_id, ids)
    assert get_traits(project_id, ids) == stored
    db.session.rollback()
    held()
    drain()


def amounts_by_customer(project_id: int) -> dict[int, list[float]]:
    """Each customer's recorded charge amounts, in the order they were recorded."""
    out: dict[int, list[float]] = {}
    for e in events(project_id, "Stripe Charge Succeeded"):
        out.setdefault(e.customer_id, []).append(e.properties["amount"])
    return out


def run_drain(app, project_id: int) -> int:
    """One drain job in another thread; fails if it does not return within 30 s (it
    would be waiting on a lock another drain holds)."""
    result: list[int] = []

    def work() -> None:
        with app.app_context():
            result.append(jobs.execute(DRAIN, project_id, [], {}))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the drain waited for the customer another drain holds"
    return result[0]


@pytest.mark.skipif(BACKEND != "postgres", reason="two writers at once need PostgreSQL")
def test_a_drain_leaves_the_customer_another_drain_holds_without_waiting(
        wired, shop, app, held, drain):  # noqa: F811
    project_id, _key, account, cus, _sub = shop
    double = wired.double
    bo = double.create_customer(account, email="bo@example.com")["id"]
    # Ann again in Stripe (same email): one CrowdPower customer, held as one.
    twin = double.create_customer(account, email="ann@example.com")["id"]
    double.webhooks.flush(10)
    drain_once(project_id)  # both linked
    client = app.test_client()
    people = [cus["id"], bo, twin, bo, cus["id"]]
    bodies = [charge_event(double, account, who, 1000 + i, status="succeeded")
              for i, who in enumerate(people)]
    assert all(post(client, body).status_code == 200 for body in bodies)
    rows = [r for r in inbox("pending") if r.type == "charge.succeeded"]
    assert [r.customer_stripe_id for r in rows] == people  # stored with the event
    db.session.commit()
    # Another drain is applying Ann's first event: it holds her row and Ann herself.
    with db.engine.connect() as other:
        other.execute(text("SELECT id FROM stripe_webhook_events WHERE id = :id FOR UPDATE"),
                      {"id": rows[0].id})
        assert inbox_module.hold_customers(other, project_id, [cus["id"]]) == {cus["id"]}
        started = time.monotonic()
        assert run_drain(app, project_id) == 2  # Bo's two; neither of Ann's Stripe ids
        assert time.monotonic() - started < 10
        assert [r.status for r in inbox() if r.id in {r.id for r in rows}] == [
            "pending", "processed", "pending", "processed", "pending"]
        other.rollback()  # that drain let her go
    assert run_drain(app, project_id) == 3
    ann = customer_by_email(project_id, "ann@example.com").id
    bob = customer_by_email(project_id, "bo@example.com").id
    assert amounts_by_customer(project_id) == {ann: [10.0, 10.02, 10.04], bob: [10.01, 10.03]}
    held()
    drain()


@pytest.mark.skipif(BACKEND != "postgres", reason="two writers at once need PostgreSQL")
def test_a_customers_events_are_applied_in_arrival_order_across_batches_and_drains(
        wired, shop, app, held, drain):  # noqa: F811
    project_id, _key, account, cus, _sub = shop
    double = wired.double
    app.config["STRIPE_WEBHOOK_BATCH"] = 3
    others = [double.create_customer(account, email=f"o{i}@example.com")["id"]
              for i in range(2)]
    double.webhooks.flush(10)
    client = app.test_client()
    people = [cus["id"], *others]
    picks = random.Random(17).choices(range(3), weights=(3, 1, 1), k=48)
    bodies = [charge_event(double, account, people[p], 1000 + i, status="succeeded")
              for i, p in enumerate(picks)]
    assert all(post(client, body).status_code == 200 for body in bodies)
    two_drains(app, project_id)
    assert {(r.status, r.attempts) for r in inbox() if r.type == "charge.succeeded"} \
        == {("processed", 1)}
    ids = [customer_by_email(project_id, e).id
           for e in ("ann@example.com", "o0@example.com", "o1@example.com")]
    expected = {ids[p]: [] for p in range(3)}
    for i, p in enumerate(picks):
        expected[ids[p]].append((1000 + i) / 100)
    assert amounts_by_customer(project_id) == expected  # each in the order it arrived
    held()
    drain()


@pytest.mark.skipif(BACKEND != "postgres", reason="operator classes are PostgreSQL's")
def test_the_twin_rules_prefix_look_up_can_use_the_object_index(app):
    """The twin rule's ``object_key LIKE 'type:id:%'`` needs pattern operators on the
    index: a plain btree serves LIKE only under the C collation (else the rule filtered the
    project's whole inbox: 38.6 ms a check against 0.075 ms on the bench's 27,000 events)."""
    from sqlalchemy import text

    with app.app_context():
        indexdef = db.session.execute(text(
            "SELECT indexdef FROM pg_indexes WHERE indexname = "
            "'ix_stripe_webhook_events_object'")).scalar_one()
    assert "(project_id, object_key text_pattern_ops)" in indexdef, indexdef


@pytest.mark.skipif(BACKEND != "postgres", reason="plans are PostgreSQL's")
def test_the_twin_rules_prefix_look_up_is_an_index_range_in_a_generic_plan(app):
    """The driver prepares a statement run often, and PostgreSQL then plans it for any
    value: ``LIKE $1`` is no index range in such a plan (the whole inbox was scanned on
    every twin check, 20 ms at 80k rows). ``events.same_object`` must stay one."""
    import re

    from sqlalchemy import select, text
    from sqlalchemy.dialects import postgresql

    from crowdpower.plugins.stripe.events import same_object
    from crowdpower.plugins.stripe.models import StripeWebhookEvent

    stmt = select(StripeWebhookEvent.id).where(
        StripeWebhookEvent.project_id == 1, same_object("subscription:sub_1:"))
    compiled = stmt.compile(dialect=postgresql.psycopg.dialect())
    names = re.findall(r"%\((\w+)\)s", str(compiled))
    sql = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", str(compiled))
    with app.app_context():
        db.session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        db.session.execute(text("SET LOCAL enable_seqscan = off"))
        # An empty inbox makes every index led by project_id look alike: set the others
        # aside (rolled back below), so the plan shows what the object index is used for.
        for other in db.session.execute(text(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'stripe_webhook_events' "
                "AND indexdef LIKE '%(project_id%' "
                "AND indexname <> 'ix_stripe_webhook_events_object'")).scalars().all():
            db.session.execute(text(f"DROP INDEX {other}"))
        db.session.execute(text(f"PREPARE twin_check AS {sql}"))
        values = ", ".join(f"'{compiled.params[n]}'" if isinstance(compiled.params[n], str)
                           else str(compiled.params[n]) for n in names)
        plan = "\n".join(db.session.execute(text(
            f"EXPLAIN EXECUTE twin_check({values})")).scalars())
        db.session.execute(text("DEALLOCATE twin_check"))
        db.session.rollback()
    assert "ix_stripe_webhook_events_object" in plan, plan
    cond = next(line for line in plan.splitlines() if "Index Cond" in line)
    assert "object_key" in cond and "~>=~" in cond, plan


def _dunning(client, key: str) -> None:
    r = client.post("/api/v1/automations", headers={"Authorization": f"Bearer {key}"}, json={
        "name": "Dunning", "trigger": "Stripe Charge Failed", "subject": "Payment failed",
        "text": "{{ event.properties.amount }}"})
    assert r.status_code == 201, r.json


def _messages(project_id: int) -> list:
    from sqlalchemy import select

    from crowdpower.automations.models import Message

    with project_scope(project_id):
        return list(db.session.scalars(select(Message).where(
            Message.project_id == project_id)))


@pytest.mark.parametrize("inline", [20, 0])
def test_a_small_batchs_automations_are_dispatched_by_the_drain_itself(
        wired, shop, app, held, drain, inline):  # noqa: F811
    """A few events' messages are made right after the drain's commit, in the drain's
    job (no dispatch job waits for a free worker); with the setting at 0, or for a big
    batch, one dispatch job is queued instead. Either way one message per event."""
    project_id, key, account, cus, _sub = shop
    app.config["AUTOMATION_INLINE_DISPATCH"] = inline
    _dunning(app.test_client(), key)
    client = app.test_client()
    bodies = [charge_event(wired.double, account, cus["id"], 300 + i) for i in range(3)]
    assert all(post(client, body).status_code == 200 for body in bodies)
    assert drain_once(project_id) == 3
    dispatch_jobs = queued(app, "automations.dispatch") if BACKEND == "postgres" else None
    made = _messages(project_id)
    if inline:
        assert sorted(m.event_id for m in made) == sorted(
            e.id for e in events(project_id, "Stripe Charge Failed"))
        assert dispatch_jobs in (0, None)
    else:
        assert made == []  # waiting for the dispatch job
        assert dispatch_jobs in (1, None)
    held()
    drain()
    assert len(_messages(project_id)) == 3  # and nothing doubled by the queued path


def _generic_plan(stmt) -> str:
    """``EXPLAIN`` of a statement as the driver runs it once prepared: the values sent as
    parameters, and PostgreSQL's plan for any value (``force_generic_plan``)."""
    import re

    from sqlalchemy.dialects import postgresql

    compiled = stmt.compile(dialect=postgresql.psycopg.dialect())
    names = re.findall(r"%\((\w+)\)s", str(compiled))
    sql = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", str(compiled))
    values = ", ".join(f"'{compiled.params[n]}'" if isinstance(compiled.params[n], str)
                       else str(compiled.params[n]) for n in names)
    db.session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
    db.session.execute(text(f"PREPARE generic AS {sql}"))
    plan = "\n".join(db.session.execute(text(f"EXPLAIN EXECUTE generic({values})")).scalars())
    db.session.execute(text("DEALLOCATE generic"))
    return plan


_QUEUE_ROWS = text("""
INSERT INTO stripe_webhook_events (event_id, account_id, project_id, type, object_key,
    customer_stripe_id, livemode, created, payload, status, attempts, received_at)
SELECT :tag || g, 'acct_1', :project_id, 'charge.succeeded', 'charge' || chr(58) || :tag || g,
       'cus_' || (g % 300), false, 1700000000 + g, repeat('x', 1200), :status, 0, now()
FROM generate_series(1, :n) AS g""")


@pytest.mark.skipif(BACKEND != "postgres", reason="plans are PostgreSQL's")
@pytest.mark.parametrize("analyzed", ["a queue", "an all-pending burst"])
def test_the_drains_claim_reads_the_inbox_index_in_a_generic_plan(app, make_project, analyzed):
    """The claim must read the partial inbox index (the project's pending rows, in order)
    whatever the statistics. Sent with the status as a parameter, a generic plan could not
    use it; with the project as an equality, PostgreSQL read the primary key in id order
    and filtered out every processed row first (an inbox is a queue: they come first),
    with fresh statistics and with statistics taken while a first burst was all pending
    (and, analysed empty, sorted every pending row)."""
    from crowdpower.plugins.stripe.inbox import claim

    with app.app_context():
        project_id, _key = make_project()
        if analyzed == "an all-pending burst":
            db.session.execute(_QUEUE_ROWS, {"tag": "a", "project_id": project_id,
                                             "status": "pending", "n": 6000})
            db.session.execute(text("ANALYZE stripe_webhook_events"))
            db.session.execute(text("UPDATE stripe_webhook_events SET status = 'processed'"))
        else:
            db.session.execute(_QUEUE_ROWS, {"tag": "a", "project_id": project_id,
                                             "status": "processed", "n": 6000})
        db.session.execute(_QUEUE_ROWS, {"tag": "b", "project_id": project_id,
                                         "status": "pending", "n": 6000})
        if analyzed == "a queue":
            db.session.execute(text("ANALYZE stripe_webhook_events"))
        plan = _generic_plan(claim(project_id, 250))
        db.session.rollback()  # the rows and the statistics
    assert "Index Scan using ix_stripe_webhook_events_inbox" in plan, plan
    assert "Sort" not in plan, plan


@pytest.mark.skipif(BACKEND != "postgres", reason="storage parameters are PostgreSQL's")
def test_the_inbox_follows_its_bursts(app):
    """The customer index holds pending rows only (``inbox._EARLIER`` no longer walks a
    customer's history, and an applied event is not written to it), and the inbox is
    vacuumed and analysed after 2% of it changed, not a fifth / a tenth."""
    with app.app_context():
        indexdef = db.session.execute(text(
            "SELECT indexdef FROM pg_indexes WHERE indexname = "
            "'ix_stripe_webhook_events_customer'")).scalar_one()
        options = db.session.execute(text(
            "SELECT reloptions FROM pg_class WHERE relname = 'stripe_webhook_events'"
        )).scalar_one()
    assert indexdef.endswith("WHERE ((status)::text = 'pending'::text)"), indexdef
    assert {"autovacuum_vacuum_scale_factor=0.02", "autovacuum_analyze_scale_factor=0.02"} \
        <= set(options or []), options
