"""Traits from the mirror: charges summed where they are stored give the traits the pure
``mapping.customer_traits`` gives over the whole history (the reference)."""

from __future__ import annotations

import pytest

from crowdpower.extensions import db
from crowdpower.plugins.stripe import mapping, store
from crowdpower.services import utcnow
from crowdpower.tenancy import project_scope
from tests.conftest import BACKEND
from tests.stripe_plugin.test_mapping import T0, charge, customer, item, price, sub


def histories() -> dict[str, tuple[list[dict], list[dict], list[dict], list[dict]]]:
    """Stripe customer id → (customers, subscriptions, charges, disputes), chosen for the
    corners of the rules: refunds, partial captures, uncaptured authorisations, several
    currencies, a last charge without a currency, ties in time, float and missing amounts,
    and two Stripe customers sharing one email (one CrowdPower customer)."""
    def c(cid: str, **over) -> dict:
        return customer(cid, email=f"{cid}@shop.test", **over)

    ties = [{**charge(500 + n, created=T0, customer="cus_ties"), "id": i}
            for n, i in enumerate(("ch_b", "ch_a", "ch_c"))]
    found = {
        "cus_plain": ([c("cus_plain")], [sub("active", customer="cus_plain")], [
            charge(1000, created=T0 + i, customer="cus_plain") for i in range(5)], []),
        "cus_refunds": ([c("cus_refunds")], [], [
            charge(10000, created=T0, refunded=10000, customer="cus_refunds"),
            charge(5000, created=T0 + 1, refunded=1250, customer="cus_refunds"),
            charge(3000, created=T0 + 2, customer="cus_refunds", amount_captured=2000,
                   refunded=1500),  # partly captured, the rest released
            charge(7000, created=T0 + 3, customer="cus_refunds", captured=False),
            charge(900, "usd", "failed", created=T0 + 4, customer="cus_refunds"),
            charge(800, "usd", "failed", created=T0 + 9, customer="cus_refunds")],
            [{"id": "dp_1", "object": "dispute", "amount": 1000, "currency": "usd",
              "status": "lost", "charge": "ch_x", "customer": "cus_refunds"}]),
        "cus_fx": ([c("cus_fx")], [sub("active", customer="cus_fx", items=[
            item(price(12900, currency="gbp"))])], [
            charge(2900, "USD", created=T0, customer="cus_fx"),
            charge(4900, "usd", created=T0 + 5, refunded=900, customer="cus_fx"),
            charge(100000, "jpy", created=T0 + 6, customer="cus_fx"),
            charge(300, None, created=T0 + 7, customer="cus_fx")], []),
        "cus_odd": ([c("cus_odd")], [], [
            charge(1999.0, created=T0, customer="cus_odd"),  # type: ignore[arg-type]
            charge(None, created=None, customer="cus_odd", amount_captured=None),  # type: ignore[arg-type]
            charge(400, "usd", "failed", created=None, customer="cus_odd")], []),
        "cus_ties": ([c("cus_ties")], [], ties, []),
        "cus_failed_only": ([c("cus_failed_only")], [], [
            charge(900, "eur", "failed", created=T0, customer="cus_failed_only")], []),
        "cus_none": ([c("cus_none", currency="chf")], [], [], []),
        "cus_twin_a": ([customer("cus_twin_a", email="twin@shop.test", created=T0)], [], [
            charge(1000, "eur", created=T0, customer="cus_twin_a")], []),
        "cus_twin_b": ([customer("cus_twin_b", email="twin@shop.test", created=T0 + 1)], [], [
            charge(2500, "eur", created=T0 + 2, customer="cus_twin_b")], []),
    }
    for cus, (_customers, *objects) in found.items():  # ids unique across customers
        for kind in objects:
            for obj in kind:
                obj["id"] = f"{cus}_{obj['id']}"
    return found


def test_traits_from_the_mirror_are_the_pure_functions_over_the_whole_history(
        app, make_project):
    project_id, _key = make_project()
    data = histories()
    when = utcnow()
    with project_scope(project_id):
        for customers, subs, charges, disputes in data.values():
            store.upsert_objects(project_id, "customer", customers, when)
            store.upsert_objects(project_id, "subscription", subs, when)
            store.upsert_objects(project_id, "charge", charges, when)
            store.upsert_objects(project_id, "dispute", disputes, when)
        linked = store.link_customers(project_id, [cs[0] for cs, *_ in data.values()])
        assert linked["cus_twin_a"] == linked["cus_twin_b"]  # one email, one customer
        computed = dict(store.compute_traits(project_id, linked.values()))
        by_customer: dict[int, list[str]] = {}
        for cus, customer_id in linked.items():
            by_customer.setdefault(customer_id, []).append(cus)
        for customer_id, owned in by_customer.items():
            parts = [data[cus] for cus in owned]
            # What the mirror keeps of each object (``compact``), as the sync would see it.
            customers = [store.compact("customer", o) for p in parts for o in p[0]]
            subs = [store.compact("subscription", o) for p in parts for o in p[1]]
            charges = [store.compact("charge", o) for p in parts for o in p[2]]
            disputes = [store.compact("dispute", o) for p in parts for o in p[3]]
            expected = mapping.customer_traits(customers, subs, charges, {},
                                               disputes=disputes)
            assert computed[customer_id] == expected, owned
            if BACKEND == "postgres":
                summary = store.charge_summaries(project_id, [customer_id]).get(
                    customer_id, mapping.ChargeSummary())
                reference = mapping.summarize_charges(charges)
                assert (summary.succeeded, summary.failed, summary.last_failed_at,
                        summary.last_paid_currency, summary.totals) == (
                    reference.succeeded, reference.failed, reference.last_failed_at,
                    reference.last_paid_currency, reference.totals), owned
                assert (summary.last or {}).get("id") == (reference.last or {}).get("id")
    db.session.rollback()
    assert computed[linked["cus_refunds"]]["stripe_total_spent"] == 42.5  # 37.5 + 15 - 10
    assert computed[linked["cus_ties"]]["stripe_charge_count"] == 3
    assert computed[linked["cus_ties"]]["stripe_last_charge_amount"] == 5.02  # ch_c: the id breaks the tie


@pytest.mark.skipif(BACKEND != "postgres", reason="the summary is PostgreSQL's SQL")
def test_a_customers_traits_cost_two_statements_of_charges_whatever_their_history(
        app, make_project):
    """A long history is summed in the database: the rows read back do not grow."""
    from sqlalchemy import event

    project_id, _key = make_project()
    with project_scope(project_id):
        store.upsert_objects(project_id, "customer", [customer("cus_long")], utcnow())
        store.upsert_objects(project_id, "charge", [
            charge(100 + i, created=T0 + i, customer="cus_long") for i in range(300)],
            utcnow())
        [customer_id] = store.link_customers(project_id, [customer("cus_long")]).values()
        fetched: list[int] = []

        def count(conn, cursor, statement, *_args) -> None:
            if "stripe_objects" in statement:
                fetched.append(cursor.rowcount)

        event.listen(db.engine, "after_cursor_execute", count)
        try:
            [(_id, traits)] = store.compute_traits(project_id, [customer_id])
        finally:
            event.remove(db.engine, "after_cursor_execute", count)
    db.session.rollback()
    assert traits["stripe_charge_count"] == 300
    assert traits["stripe_total_spent"] == sum(100 + i for i in range(300)) / 100
    assert sum(fetched) <= 4, fetched  # the customer row, one totals row, one last charge
