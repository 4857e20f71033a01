"""Events whose object must be read from Stripe: read once, in the background, in order.

An event no newer than the stored copy of its object (Stripe's timestamps are whole
seconds) needs the object read from Stripe. The drain starts that read on a pool thread
and goes on with other customers' events; the event and its customer's later ones are
applied once the copy has landed, with the outcome an in-line read gives. A copy read
after an event arrived spares that event a read of its own.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text, update

from crowdpower.customers import get_traits
from crowdpower.extensions import db
from crowdpower.plugins.stripe.events import needs_fetch
from crowdpower.plugins.stripe.models import StripeObject
from tests.conftest import BACKEND
from tests.stripe_plugin.test_inbox_batches import drain_once
from tests.stripe_plugin.test_webhooks import (  # noqa: F401 - fixtures
    charge_event,
    customer_by_email,
    events,
    held,
    inbox,
    post,
    shop,
)

postgres_only = pytest.mark.skipif(BACKEND != "postgres",
                                   reason="background reads need Redis and PostgreSQL")

T = datetime(2026, 12, 8, 12, 0, 0, tzinfo=UTC)


def test_needs_fetch_follows_the_order_of_what_we_know():
    sub = {"object": "subscription", "id": "sub_1", "discounts": []}
    second = timedelta(seconds=1)
    assert not needs_fetch(sub, None, None, T, T)  # nothing stored
    assert not needs_fetch(sub, T - second, None, T, T)  # the event is newer
    assert needs_fetch(sub, T, None, T, T)  # same second: which is newer is unknown
    assert needs_fetch(sub, T + second, T + second, T, T)  # read too soon after receipt
    assert not needs_fetch(sub, T + 5 * second, T + 5 * second, T, T)  # read after it
    with_ids = {**sub, "discounts": ["di_1"]}  # the coupons are needed: always read
    assert needs_fetch(with_ids, None, None, T, T)
    assert needs_fetch(with_ids, T + 5 * second, T + 5 * second, T, T)


def _stored_as_old_as_the_updates(sub_id: str) -> None:
    """The stored copy describes the same second as the pending updates (taken from an
    event of that second): each update needs the subscription read."""
    db.session.execute(text(
        "UPDATE stripe_objects SET fetched_at = NULL, synced_at = (SELECT to_timestamp("
        "max(created)) FROM stripe_webhook_events WHERE status = 'pending') "
        "WHERE stripe_id = :sub"), {"sub": sub_id})
    db.session.commit()


def _gets(double, account: str, sub_id: str) -> int:
    return double.request_count(account, path=f"/v1/subscriptions/{sub_id}", method="GET")


@postgres_only
def test_a_slow_read_holds_its_customer_only_and_is_made_once(
        wired, shop, app, held):  # noqa: F811
    project_id, _key, account, _cus, sub = shop
    double = wired.double
    app.config["STRIPE_WEBHOOK_DRAIN_SECONDS"] = 30
    bob = double.create_customer(account, email="bob@example.com", emit=False)
    client = app.test_client()
    assert post(client, charge_event(double, account, bob["id"], 500)).status_code == 200
    double.update_subscription(account, sub["id"], quantity=2)
    double.update_subscription(account, sub["id"], quantity=3)
    double.webhooks.flush(10)
    later = [charge_event(double, account, bob["id"], 600 + i) for i in range(3)]
    assert all(post(client, body).status_code == 200 for body in later)
    pending = {r.id for r in inbox("pending")}
    assert len(pending) == 6
    _stored_as_old_as_the_updates(sub["id"])
    double.reset_request_log()
    double.faults.slow(account, seconds=1.0, n=2)  # Bob's look-up, the subscription's read
    assert drain_once(project_id) == 6
    rows = [r for r in inbox() if r.id in pending]
    assert {r.status for r in rows} == {"processed"}
    charges = [r.processed_at for r in rows if r.type.startswith("charge.")]
    updates = [r.processed_at for r in rows if r.type.startswith("customer.subscription")]
    # Bob's later charges did not wait for Ann's read; Ann's updates did, in order.
    assert len(charges) == 4 and len(updates) == 2
    assert (min(updates) - max(charges)).total_seconds() >= 0.5
    assert [e.properties["quantity"] for e in events(
        project_id, "Stripe Subscription Updated")] == [2, 3]
    # One read covered both updates: it was sent after both had arrived.
    assert _gets(double, account, sub["id"]) == 1
    ann = customer_by_email(project_id, "ann@example.com")
    assert get_traits(project_id, [ann.id])[ann.id]["stripe_mrr"] == 87.0
    fetched_at = db.session.scalar(text(
        "SELECT fetched_at FROM stripe_objects WHERE stripe_id = :s"), {"s": sub["id"]})
    assert fetched_at is not None


@postgres_only
def test_a_failed_background_read_is_made_again_in_line(wired, shop, app, held):  # noqa: F811
    project_id, _key, account, _cus, sub = shop
    double = wired.double
    app.config["STRIPE_MAX_NETWORK_RETRIES"] = 0
    double.update_subscription(account, sub["id"], quantity=4)
    double.webhooks.flush(10)
    [pending] = inbox("pending")
    _stored_as_old_as_the_updates(sub["id"])
    double.reset_request_log()
    double.faults.fail_next(account, n=1, status=500)  # the background read
    assert drain_once(project_id) == 1
    [row] = [r for r in inbox() if r.id == pending.id]
    assert (row.status, row.attempts) == ("processed", 1)
    assert _gets(double, account, sub["id"]) == 2  # the failed one, then in line
    [update] = events(project_id, "Stripe Subscription Updated")
    assert update.properties["quantity"] == 4
    ann = customer_by_email(project_id, "ann@example.com")
    assert get_traits(project_id, [ann.id])[ann.id]["stripe_mrr"] == 116.0


def test_a_copy_read_after_the_event_arrived_spares_its_read(
        wired, shop, app, held, other_tenant):  # noqa: F811
    """The one-by-one path (``process_event``) follows the same rule."""
    project_id, _key, account, _cus, sub = shop
    double = wired.double
    app.config["STRIPE_WEBHOOK_READ_THREADS"] = 0  # the in-line path on both backends
    app.extensions.pop("crowdpower.stripe.prefetch", None)
    double.update_subscription(account, sub["id"], quantity=2)
    double.webhooks.flush(10)
    [row] = inbox("pending")
    later = row.received_at + timedelta(seconds=5)
    db.session.execute(update(StripeObject).where(
        StripeObject.project_id == project_id, StripeObject.stripe_id == sub["id"]).values(
        synced_at=later, fetched_at=later))
    db.session.commit()
    double.reset_request_log()
    assert drain_once(project_id) == 1
    assert _gets(double, account, sub["id"]) == 0
    assert [e.properties["quantity"] for e in events(
        project_id, "Stripe Subscription Updated")] == [2]
    # Another project's drain has nothing of it.
    other_id = other_tenant[0]
    assert drain_once(other_id) == 0
    assert events(other_id, "Stripe Subscription Updated") == []


@postgres_only
def test_a_backlogs_reads_are_started_ahead_once_per_object(
        wired, shop, app, held, other_tenant):  # noqa: F811
    from crowdpower.plugins.stripe import inbox as inbox_module
    from crowdpower.plugins.stripe.connection import snapshot
    from crowdpower.plugins.stripe.prefetch import prefetcher, read_ahead

    project_id, _key, account, _cus, sub = shop
    double = wired.double
    bob = double.create_customer(account, email="bob@example.com", emit=False)
    double.update_subscription(account, sub["id"], quantity=2)
    double.update_subscription(account, sub["id"], quantity=3)
    double.webhooks.flush(10)
    assert post(app.test_client(), charge_event(double, account, bob["id"], 500)
                ).status_code == 200
    _stored_as_old_as_the_updates(sub["id"])
    # A backlog: the events arrived a while ago (reads sent now come after them).
    db.session.execute(text("UPDATE stripe_webhook_events SET received_at = received_at "
                            "- interval '5 seconds' WHERE status = 'pending'"))
    db.session.commit()
    double.reset_request_log()
    reads = prefetcher()
    assert reads is not None
    # Another project's look ahead finds nothing of this one's.
    assert read_ahead(other_tenant[0], snapshot(project_id), reads,
                      inbox_module.PENDING)[0] == 0
    started, last = read_ahead(project_id, snapshot(project_id), reads, inbox_module.PENDING)
    assert started == 1 and last == max(r.id for r in inbox("pending"))
    key = reads.key(project_id, "subscription", sub["id"])
    deadline = time.monotonic() + 10
    while reads.landed([key]) == [False] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert isinstance(reads.landed([key])[0], datetime)
    # Started again, it finds the read done: none more.
    assert read_ahead(project_id, snapshot(project_id), reads, inbox_module.PENDING)[0] == 0
    assert _gets(double, account, sub["id"]) == 1
    assert drain_once(project_id) == 3
    assert _gets(double, account, sub["id"]) == 1  # both updates covered by that read
    assert double.request_count(account, method="GET") == 2  # and Bob's look-up
    assert [e.properties["quantity"] for e in events(
        project_id, "Stripe Subscription Updated")] == [2, 3]
    ann = customer_by_email(project_id, "ann@example.com")
    assert get_traits(project_id, [ann.id])[ann.id]["stripe_mrr"] == 87.0
