"""Traits computed while the lists are fetched (PostgreSQL): the same result as after them.

A customer's traits are computed once every list has been written past the customer's
creation; anything written for it afterwards (a charge older than its customer, an older
Stripe customer with the same email) makes it dirty, and the traits phase recomputes it.
"""

from __future__ import annotations

import pytest

from tests.conftest import BACKEND
from tests.stripe_sync.expected import actual_traits, expected_traits

pytestmark = pytest.mark.skipif(BACKEND != "postgres",
                                reason="streamed traits need a second writer (PostgreSQL)")

LONG_AGO = 1_000_000_000  # 2001: older than every seeded object


def test_streamed_traits_match_and_late_objects_make_customers_dirty(
        stripe_double, tenant, connect_account, start_sync, wait_sync):
    project_id, _key, _c = tenant
    account = stripe_double.create_account()
    stripe_double.seed(account, customers=600, seed=57)
    # The newest customer: streamed early, then a charge older than it arrives last.
    newest = stripe_double.create_customer(account, email="late.charge@shop.test", emit=False)
    stripe_double.create_charge(account, newest["id"], 4200, created=LONG_AGO + 100,
                                emit=False)
    # A newer and an older Stripe customer with one email: one CrowdPower customer, whose
    # older half (with a subscription's worth of charges) is listed after it was computed.
    stripe_double.create_customer(account, email="twice@shop.test", emit=False)
    older = stripe_double.create_customer(account, email="Twice@shop.test", emit=False,
                                          created=LONG_AGO)
    stripe_double.create_charge(account, older["id"], 1999, created=LONG_AGO + 10, emit=False)
    connect_account(project_id, account)

    start_sync(project_id)
    run = wait_sync(project_id, timeout=120)
    assert run.state == "succeeded", run.error

    assert run.counts["traits_streamed"] > 0  # computed while the lists were fetched
    assert run.counts["traits_dirty"] >= 2    # the two late arrivals at least
    expected = expected_traits(account)
    actual = actual_traits(project_id)
    assert actual == expected
    assert actual["email:late.charge@shop.test"]["stripe_charge_count"] == 1
    assert actual["email:twice@shop.test"]["stripe_customer_ids"] == \
        expected["email:twice@shop.test"]["stripe_customer_ids"]
    assert run.customers_processed == run.customers_total == len(expected)
