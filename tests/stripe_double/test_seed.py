"""Seeded accounts: deterministic, varied like a real business, and fast to build."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest
import stripe
from crowdpower_stripe_double import StripeDouble
from crowdpower_stripe_double.seed import STATUSES

from tests.stripe_double.conftest import plain

NOW = 1_790_000_000


def _all(client: stripe.StripeClient, path: str, **params: object) -> list[dict]:
    out: list[dict] = []
    cursor = None
    while True:
        page = plain(client.raw_request("get", path, limit=100, **params,
                                        **({"starting_after": cursor} if cursor else {})))
        out += page["data"]
        if not page["has_more"]:
            return out
        cursor = page["data"][-1]["id"]


@pytest.fixture(scope="module")
def seeded(double: StripeDouble) -> dict:
    """One account of 1,500 customers read back through the SDK (shared by the module)."""
    account = double.create_account()
    counts = double.seed(account, customers=1500, seed=11, now=NOW)
    client = stripe.StripeClient("sk_test_double_suite", stripe_account=account,
                                 base_addresses={"api": double.test_base_url})
    return {"account": account, "counts": counts,
            "customers": _all(client, "/v1/customers"),
            "subscriptions": _all(client, "/v1/subscriptions", status="all"),
            "charges": _all(client, "/v1/charges")}


def _fingerprint(double: StripeDouble, account: str) -> dict:
    """The data of an account without its ids."""
    return {
        "customers": [(c["email"], c["name"], c["created"])
                      for c in double.objects(account, "customer")],
        "subscriptions": [(s["status"], s["items"]["data"][0]["price"]["unit_amount"],
                           s["items"]["data"][0]["quantity"], s["currency"], s["created"])
                          for s in double.objects(account, "subscription")],
        "charges": [(c["amount"], c["amount_refunded"], c["currency"], c["status"],
                     c["failure_code"], c["created"])
                    for c in double.objects(account, "charge")],
    }


def test_same_seed_same_data_other_ids(double: StripeDouble) -> None:
    a, b, c = (double.create_account() for _ in range(3))
    assert double.seed(a, customers=300, seed=5, now=NOW) == double.seed(
        b, customers=300, seed=5, now=NOW)
    double.seed(c, customers=300, seed=6, now=NOW)
    assert _fingerprint(double, a) == _fingerprint(double, b)
    assert _fingerprint(double, a) != _fingerprint(double, c)
    ids_a = {x["id"] for x in double.objects(a, "customer")}
    ids_b = {x["id"] for x in double.objects(b, "customer")}
    assert not ids_a & ids_b


def test_seeded_data_is_varied_like_a_real_business(seeded: dict) -> None:
    customers, subs, charges = seeded["customers"], seeded["subscriptions"], seeded["charges"]
    assert len(customers) == seeded["counts"]["customers"] == 1500
    assert len(subs) == seeded["counts"]["subscriptions"]
    assert len(charges) == seeded["counts"]["charges"]
    assert len({c["id"] for c in customers}) == 1500

    emails = [c["email"] for c in customers]
    assert sum(e is None for e in emails) > 50  # customers without email
    by_lower = Counter(e.lower() for e in emails if e)
    shared = [e for e, n in by_lower.items() if n > 1]
    assert shared
    assert any(len({x for x in emails if x and x.lower() == e}) > 1 for e in shared), \
        "the same email in another case"

    assert {s["status"] for s in subs} == {s for s, _ in STATUSES}
    assert {s["currency"] for s in subs} >= {"usd", "eur", "gbp"}
    intervals = {(s["items"]["data"][0]["price"]["recurring"]["interval"],
                  s["items"]["data"][0]["price"]["recurring"]["interval_count"]) for s in subs}
    assert intervals >= {("month", 1), ("year", 1), ("month", 3), ("week", 1)}
    assert any(s["cancel_at_period_end"] for s in subs)
    assert all(s["trial_end"] > NOW for s in subs if s["status"] == "trialing")

    assert {c["status"] for c in charges} == {"succeeded", "failed"}
    assert all(c["failure_code"] for c in charges if c["status"] == "failed")
    full = [c for c in charges if c["refunded"]]
    partial = [c for c in charges if 0 < c["amount_refunded"] < c["amount"]]
    assert full and partial
    assert all(c["amount_refunded"] == c["amount"] for c in full)
    assert all(r["customer"] == c["customer"] and r["charge"] == c["id"]
               for c in full + partial for r in c["refunds"]["data"])
    assert {c["currency"] for c in charges} >= {"usd", "eur", "gbp"}

    # Issue 12's shapes at realistic rates: authorisations, disputes, a metered second item,
    # zero- and three-decimal currencies.
    assert any(c["captured"] is False and c["amount_captured"] == 0 for c in charges)
    assert any(c["disputed"] for c in charges)
    assert any(len(s["items"]["data"]) == 2 and
               s["items"]["data"][1]["price"]["recurring"]["usage_type"] == "metered"
               for s in subs)
    assert {s["currency"] for s in subs} >= {"jpy", "bhd"}

    recent = sum(c["created"] >= NOW - 30 * 86400 for c in customers)
    assert 0.05 < recent / len(customers) < 0.11  # ~8% are new


def test_seeded_lists_are_newest_first_and_filterable(double: StripeDouble,
                                                      seeded: dict) -> None:
    created = [c["created"] for c in seeded["customers"]]
    assert created == sorted(created, reverse=True)
    client = stripe.StripeClient("sk_test_double_suite", stripe_account=seeded["account"],
                                 base_addresses={"api": double.test_base_url})
    recent = _all(client, "/v1/customers", **{"created[gte]": NOW - 30 * 86400})
    assert [c["id"] for c in recent] == [c["id"] for c in seeded["customers"]
                                         if c["created"] >= NOW - 30 * 86400]
    live = _all(client, "/v1/subscriptions")
    assert {s["id"] for s in live} == {s["id"] for s in seeded["subscriptions"]
                                       if s["status"] not in ("canceled", "incomplete_expired")}
    somebody = next(c for c in seeded["customers"]
                    if sum(s["customer"] == c["id"] for s in seeded["subscriptions"]) > 1)
    mine = _all(client, "/v1/subscriptions", customer=somebody["id"], status="all")
    assert {s["id"] for s in mine} == {s["id"] for s in seeded["subscriptions"]
                                       if s["customer"] == somebody["id"]}


def test_seeding_is_history_no_events(double: StripeDouble, seeded: dict) -> None:
    assert double.objects(seeded["account"], "event") == []


def test_seeding_an_account_with_newer_objects_keeps_lists_newest_first(
        double: StripeDouble, sdk: Callable[..., stripe.StripeClient]) -> None:
    account = double.create_account()
    fresh = double.create_customer(account, email="fresh@shop.test")
    double.seed(account, customers=50, seed=2)
    first = plain(sdk(account).v1.customers.list(params={"limit": 1}))["data"][0]
    assert first["id"] == fresh["id"]
    assert len(_all(sdk(account), "/v1/customers")) == 51


def test_20k_customers_seed_quickly(double: StripeDouble,
                                    sdk: Callable[..., stripe.StripeClient]) -> None:
    account = double.create_account()
    started = time.perf_counter()
    counts = double.seed(account, customers=20_000, seed=3)
    elapsed = time.perf_counter() - started
    print(f"seeded 20k customers in {elapsed:.2f}s: {counts}")
    assert counts["customers"] == 20_000 and counts["charges"] > 20_000
    page = plain(sdk(account).v1.customers.list(params={"limit": 100}))
    assert len(page["data"]) == 100 and page["has_more"] is True
    assert elapsed < 60  # in practice a second or two; generous for slow CI machines
