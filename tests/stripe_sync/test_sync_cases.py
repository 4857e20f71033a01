"""A sync of an account holding every awkward shape of issue 12, against the strict double,
checked against a table computed by hand (not by our mapping code)."""

from __future__ import annotations

import pytest

from tests.stripe_sync.expected import actual_traits, expected_traits

# email → (MRR, lifetime spend, plan name, currency, plan amount, plan interval), by hand:
TABLE = {
    # 29.00 licensed + a metered item (usage: no recurring revenue)
    "multi": (29.0, 0.0, "Pro monthly", "usd", 29.0, "month"),
    # volume tiers: all 10 seats at the 6+ tier's 8.00
    "volume": (80.0, 0.0, "Seats (volume)", "usd", 80.0, "month"),
    # graduated: 5 × 10.00 + 5.00 flat + 2 × 8.00
    "graduated": (71.0, 0.0, "Seats (graduated)", "usd", 71.0, "month"),
    # unit_amount_decimal 1234.5 (cents) × 2
    "decimal": (24.69, 0.0, "Storage", "usd", 24.69, "month"),
    # transform_quantity: 25 units in packs of 10, rounded up → 3 × 10.00
    "packs": (30.0, 0.0, "Packs of 10", "usd", 30.0, "month"),
    # zero-decimal: ¥5000 a year → ¥416.67 → ¥417 a month; one ¥5000 charge
    "yen": (417.0, 5000.0, "Yen annual", "jpy", 5000.0, "year"),
    # three-decimal: BHD 12.345 a quarter → 4.115 a month
    "dinar": (4.115, 0.0, "Dinar quarterly", "bhd", 12.345, "3 month"),
    # 2 × 29.00 less a forever 25% coupon
    "discount": (43.5, 0.0, "Pro monthly", "usd", 58.0, "month"),
    # 100 − 10 refunded; 50 authorised only: 0; 80 captured 60: 60; 30 lost dispute: 0;
    # 20 won dispute: 20 → 170
    "charges": (0.0, 170.0, None, "usd", None, None),
}


@pytest.fixture
def synced(stripe_double, tenant, connect_account, start_sync, wait_sync):
    project_id, _key, _c = tenant
    account = stripe_double.create_account()
    stripe_double.seed(account, customers=150, seed=21)
    cases = stripe_double.seed_cases(account)
    connect_account(project_id, account)
    _run_id, started = start_sync(project_id)
    assert started
    run = wait_sync(project_id)
    assert run.state == "succeeded", run.error
    return project_id, account, cases, run


def test_every_case_syncs_to_the_hand_computed_traits(synced) -> None:
    project_id, account, cases, run = synced
    actual = actual_traits(project_id)
    for case, (mrr, spent, plan, currency, amount, interval) in TABLE.items():
        traits = actual[f"email:{cases[case]}"]
        got = (traits.get("stripe_mrr"), traits.get("stripe_total_spent"),
               traits.get("stripe_plan_name"), traits.get("stripe_currency"),
               traits.get("stripe_plan_amount"), traits.get("stripe_plan_interval"))
        assert got == (mrr, spent, plan, currency, amount, interval), case
    charges = actual[f"email:{cases['charges']}"]
    assert charges["stripe_total_refunded"] == 10.0
    assert charges["stripe_charge_count"] == 4  # the authorisation is no charge (yet)
    # A deleted customer and a guest's charge make no CrowdPower customer; guests are counted.
    assert f"email:{cases['deleted']}" not in actual
    assert "email:guest@cases.test" not in actual
    assert run.counts["guest_charges"] == 1
    # And the whole account agrees with the independent computation over the SDK's reads.
    assert actual == expected_traits(account)
