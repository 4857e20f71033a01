"""Table tests of ``lifecycle.derive``: the rules, without I/O."""

from __future__ import annotations

import pytest

from crowdpower.plugins.stripe.lifecycle import derive, external_id


def sub(status="active", amount=2900, quantity=1, currency="usd", sid="sub_1", **extra):
    return {"id": sid, "object": "subscription", "status": status, "currency": currency,
            "cancel_at_period_end": False, **extra,
            "items": {"data": [{"quantity": quantity, "price": {
                "id": f"price_{amount}", "unit_amount": amount, "currency": currency,
                "nickname": f"P{amount}", "recurring": {"interval": "month"}}}]}}


def updated(after: dict, **previous) -> dict:
    return {"id": "evt_1", "type": "customer.subscription.updated", "livemode": False,
            "data": {"object": after, "previous_attributes": previous}}


def names(found) -> list[str]:
    return [d.name for d in found]


@pytest.mark.parametrize(("event", "expected"), [
    (updated(sub(), status="past_due"), []),  # a dunning success is not a comeback
    (updated(sub(), status="paused"), ["Stripe Subscription Reactivated"]),
    (updated(sub(status="past_due", amount=4900), items=sub(amount=2900)["items"]),
     ["Stripe Subscription Upgraded"]),  # past due but still paying: an upgrade
    (updated(sub(currency="eur", amount=9000),
             items=sub(amount=2900)["items"], currency="usd"), []),  # not comparable
    (updated(sub(status="trialing"), status="active"), ["Stripe Trial Started"]),
    (updated(sub(status="unpaid"), status="active"), []),
    (updated(sub(amount=2900, quantity=2), items=sub(amount=2900)["items"]),
     ["Stripe Subscription Upgraded"]),
    (updated(sub(), cancel_at_period_end=True), ["Stripe Subscription Reactivated"]),
])
def test_subscription_updates(event, expected):
    assert names(derive(event, [event["data"]["object"]], [])) == expected


def test_a_trial_ending_unconverted_is_churn_without_mrr():
    ended = sub(status="canceled")
    event = updated(ended, status="trialing")
    [churn] = derive(event, [ended], [])
    assert churn.name == "Stripe Customer Churned" and churn.properties["mrr_before"] == 0


def test_external_ids_are_stable_per_event_and_per_failed_charge():
    event = updated(sub(), status="paused")
    [derived] = derive(event, [], [])
    assert external_id(event, derived) == "evt_1:reactivated"
    failed = {"id": "ch_f", "object": "charge", "status": "failed", "amount": 900,
              "currency": "usd", "created": 10}
    ok = {"id": "ch_ok", "object": "charge", "status": "succeeded", "amount": 900,
          "currency": "usd", "created": 20}
    success = {"id": "evt_2", "type": "charge.succeeded", "data": {"object": ok}}
    [recovered] = derive(success, [], [failed, ok])
    assert external_id(success, recovered) == "ch_f:payment_recovered"
    late_failure = {"id": "evt_3", "type": "charge.failed", "data": {"object": failed}}
    [again] = derive(late_failure, [], [failed, ok])
    assert external_id(late_failure, again) == "ch_f:payment_recovered"


@pytest.mark.parametrize(("failed_extra", "recovers"), [
    ({}, True),
    ({"currency": "eur"}, False),                   # another currency: another payment
    ({"payment_intent": "pi_other"}, False),        # another payment intent
    ({"payment_intent": "pi_1"}, True),
])
def test_recovery_matches_the_payment(failed_extra, recovers):
    failed = {"id": "ch_f", "object": "charge", "status": "failed", "amount": 900,
              "currency": "usd", "created": 10, **failed_extra}
    ok = {"id": "ch_ok", "object": "charge", "status": "succeeded", "amount": 900,
          "currency": "usd", "created": 20, "payment_intent": "pi_1"}
    event = {"id": "evt_2", "type": "charge.succeeded", "data": {"object": ok}}
    assert bool(derive(event, [], [failed, ok])) is recovers
