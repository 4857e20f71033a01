"""Table tests of ``mapping``: Stripe objects (Stripe's own fixture shapes) → traits/events."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from crowdpower_stripe_double import objects

from crowdpower.plugins.stripe import mapping

FIXTURES = json.loads(Path(objects.__file__).with_name("fixtures.json").read_text())
DAY = 86400
T0 = 1_780_000_000  # 2026-05-28T20:26:40Z


def fixture(kind: str, **over: Any) -> dict:
    out = copy.deepcopy(FIXTURES[kind])
    out.update(over)
    return out


def price(unit_amount: int = 2900, currency: str = "usd", interval: str = "month",
          count: int = 1, nickname: str | None = None, product: str | dict = "prod_pro"
          ) -> dict:
    base = fixture("price", unit_amount=unit_amount, unit_amount_decimal=str(unit_amount),
                   currency=currency, nickname=nickname, product=product,
                   transform_quantity=None)  # the example's divide_by is a placeholder
    base["recurring"] = {**base["recurring"], "interval": interval, "interval_count": count}
    return base


def item(p: dict | None = None, quantity: int | None = 1, period_end: int = T0 + 30 * DAY
         ) -> dict:
    out = fixture("subscription_item", price=p or price(), current_period_start=T0,
                  current_period_end=period_end)
    if quantity is None:
        out.pop("quantity")
    else:
        out["quantity"] = quantity
    return out


def sub(status: str = "active", created: int = T0, items: list[dict] | None = None,
        currency: str | None = None, customer: str = "cus_a", **over: Any) -> dict:
    items = items if items is not None else [item()]
    currency = currency or (items[0]["price"]["currency"] if items else "usd")
    fields = {"id": f"sub_{status}_{created}", "status": status, "created": created,
              "customer": customer, "currency": currency, "cancel_at_period_end": False,
              "cancel_at": None, "canceled_at": None, "ended_at": None, "trial_start": None,
              "trial_end": None}
    out = fixture("subscription", **{**fields, **over})
    out["items"] = {**out["items"], "data": items}
    return out


def charge(amount: int = 1000, currency: str = "usd", status: str = "succeeded",
           created: int = T0, refunded: int = 0, customer: str = "cus_a", **over: Any) -> dict:
    # Stripe's example charge is an uncaptured authorisation; these are captured unless told.
    captured = status == "succeeded"
    fields = {"captured": captured, "amount_captured": amount if captured else 0, **over}
    return fixture("charge", id=f"ch_{status}_{created}_{amount}", amount=amount,
                   currency=currency, status=status, created=created, amount_refunded=refunded,
                   refunded=refunded == amount, customer=customer, **fields)


def customer(cid: str = "cus_a", created: int = T0, email: str | None = "ann@shop.test",
             **over: Any) -> dict:
    return fixture("customer", id=cid, created=created, email=email, **over)


def event(type_: str, obj: dict, previous: dict | None = None, eid: str = "evt_1",
          created: int = T0) -> dict:
    out = fixture("event", id=eid, type=type_, created=created, account="acct_1",
                  api_version="2025-10-29.clover")
    out["data"] = {"object": obj}
    if previous is not None:
        out["data"]["previous_attributes"] = previous
    return out


# -- small pieces -----------------------------------------------------------------------

@pytest.mark.parametrize(("amount", "currency", "expected"), [
    (1999, "usd", 19.99),
    (1999, "USD", 19.99),
    (5, "eur", 0.05),
    (0, "gbp", 0.0),
    (None, "usd", None),
    (500, "jpy", 500.0),
    (500, "JPY", 500.0),
    (1234, "krw", 1234.0),
    (99, "clp", 99.0),
    (5120, "kwd", 5.12),     # three-decimal: thousandths
    (1005, "bhd", 1.005),
    (250, None, 2.5),
])
def test_to_major(amount: int | None, currency: str | None, expected: float | None) -> None:
    assert mapping.to_major(amount, currency) == expected


@pytest.mark.parametrize(("ts", "expected"), [
    (0, "1970-01-01T00:00:00Z"),
    (T0, "2026-05-28T20:26:40Z"),
    (None, None),
])
def test_iso(ts: int | None, expected: str | None) -> None:
    assert mapping.iso(ts) == expected


@pytest.mark.parametrize(("subs", "winner"), [
    ([("canceled", 3), ("active", 1), ("trialing", 2)], 1),
    ([("past_due", 5), ("trialing", 1)], 1),
    ([("unpaid", 9), ("past_due", 1)], 1),
    ([("canceled", 9), ("paused", 1), ("incomplete", 5)], 1),
    ([("incomplete_expired", 9), ("canceled", 1)], 1),
    ([("active", 1), ("active", 5), ("active", 3)], 1),         # newest wins a tie
    ([("canceled", 1), ("canceled", 7)], 1),
    ([("mystery", 9), ("incomplete_expired", 1)], 1),            # unknown statuses rank last
])
def test_primary_subscription(subs: list[tuple[str, int]], winner: int) -> None:
    made = [sub(status, created=T0 + c) for status, c in subs]
    assert mapping.primary_subscription(made) is made[winner]
    assert mapping.primary_subscription([]) is None


@pytest.mark.parametrize(("interval", "count", "unit", "quantity", "expected"), [
    ("month", 1, 2900, 1, 2900.0),
    ("month", 1, 2900, 3, 8700.0),
    ("year", 1, 29000, 1, 29000 / 12),
    ("week", 1, 300, 1, 300 * 52 / 12),
    ("month", 3, 12900, 1, 4300.0),
    ("month", 3, 12900, 2, 8600.0),
    ("day", 1, 100, 1, 100 * 365 / 12),
    ("year", 2, 24000, 1, 1000.0),
    ("month", 1, 2900, None, 2900.0),   # no quantity: one
    ("month", 1, 2900, 0, 0.0),         # zero seats bill nothing
])
def test_subscription_mrr_by_interval(interval: str, count: int, unit: int,
                                      quantity: int | None, expected: float) -> None:
    s = sub(items=[item(price(unit, interval=interval, count=count), quantity)])
    assert mapping.subscription_mrr(s) == pytest.approx(expected)


@pytest.mark.parametrize(("status", "counts"), [
    ("active", True), ("past_due", True), ("trialing", False), ("canceled", False),
    ("unpaid", False), ("incomplete", False), ("incomplete_expired", False), ("paused", False),
])
def test_only_active_and_past_due_count_in_mrr(status: str, counts: bool) -> None:
    assert mapping.subscription_mrr(sub(status)) == (2900.0 if counts else 0.0)


def test_mrr_sums_items_of_different_intervals() -> None:
    s = sub(items=[item(price(1000)), item(price(12000, interval="year"), 2)])
    assert mapping.subscription_mrr(s) == pytest.approx(1000 + 2000)


def test_price_details() -> None:
    assert mapping.interval_of(price(interval="month", count=3)) == "3 month"
    assert mapping.interval_of(price(interval="year")) == "year"
    assert mapping.interval_of({"id": "price_x"}) is None
    assert mapping.plan_name(price(nickname="Gold")) == "Gold"
    assert mapping.plan_name(price(product=fixture("product", name="Pro"))) == "Pro"
    assert mapping.plan_name(price(product="prod_1"), {"prod_1": "Team"}) == "Team"
    assert mapping.plan_name(price(product="prod_1")) is None
    # Items since API 2025-03-31 carry the period; older shapes had it on the subscription.
    assert mapping.period_end(sub(items=[item(period_end=T0 + 5)])) == T0 + 5
    assert mapping.period_end({"items": {"data": []}, "current_period_end": T0}) == T0


# -- customer traits ----------------------------------------------------------------------

def test_traits_of_a_typical_subscriber() -> None:
    s = sub("active", items=[item(price(2900, nickname="Pro monthly"), 2)],
            cancel_at_period_end=True, cancel_at=T0 + 30 * DAY)
    charges = [charge(5800, created=T0 + 10), charge(5800, created=T0 + 20, refunded=800)]
    traits = mapping.customer_traits([customer(livemode=True, delinquent=True)], [s], charges)
    assert set(traits) == set(mapping.TRAIT_KEYS)
    assert traits == {
        "stripe_customer_id": "cus_a",
        "stripe_customer_ids": ["cus_a"],
        "stripe_created_at": "2026-05-28T20:26:40Z",
        "stripe_livemode": True,
        "stripe_currency": "usd",
        "stripe_subscription_status": "active",
        "stripe_active_subscriptions": 1,
        "stripe_plan_name": "Pro monthly",
        "stripe_plan_interval": "month",
        "stripe_plan_amount": 58.0,
        "stripe_mrr": 58.0,
        "stripe_trial_end_at": None,
        "stripe_current_period_end_at": mapping.iso(T0 + 30 * DAY),
        "stripe_cancel_at_period_end": True,
        "stripe_canceled_at": None,
        "stripe_delinquent": True,
        "stripe_total_spent": 108.0,
        "stripe_total_refunded": 8.0,
        "stripe_spend_currency": "usd",
        "stripe_charge_count": 2,
        "stripe_failed_charge_count": 0,
        "stripe_last_charge_at": mapping.iso(T0 + 20),
        "stripe_last_charge_amount": 58.0,
        "stripe_last_charge_currency": "usd",
        "stripe_last_payment_failed_at": None,
    }


def test_traits_without_subscriptions_say_none() -> None:
    traits = mapping.customer_traits([customer(currency="eur")], [], [])
    assert traits["stripe_subscription_status"] == "none"
    assert traits["stripe_active_subscriptions"] == 0
    assert traits["stripe_currency"] == "eur"  # the customer's own currency, last resort
    assert (traits["stripe_mrr"], traits["stripe_total_spent"], traits["stripe_charge_count"]) \
        == (0.0, 0.0, 0)
    for key in ("stripe_plan_name", "stripe_plan_interval", "stripe_plan_amount",
                "stripe_trial_end_at", "stripe_current_period_end_at", "stripe_canceled_at",
                "stripe_cancel_at_period_end", "stripe_last_charge_at",
                "stripe_last_payment_failed_at"):
        assert traits[key] is None, key
    bare = mapping.customer_traits([customer(currency=None)], [], [])
    assert bare["stripe_currency"] is None and bare["stripe_total_spent"] == 0.0


def test_several_stripe_customers_sharing_an_email_are_summed() -> None:
    old = customer("cus_old", created=T0 - 100 * DAY, email="ann@shop.test")
    new = customer("cus_new", created=T0, email="ANN@shop.test")
    gone = customer("cus_gone", created=T0 - 400 * DAY, deleted=True)
    subs = [sub("canceled", created=T0 - 90 * DAY, customer="cus_old",
                canceled_at=T0 - 10 * DAY),
            sub("active", created=T0, customer="cus_new",
                items=[item(price(4900, nickname="Team"))]),
            sub("past_due", created=T0 - 5, customer="cus_old")]
    charges = [charge(1000, created=T0 - 50 * DAY, customer="cus_old"),
               charge(4900, created=T0 + 1, customer="cus_new"),
               charge(4900, status="failed", created=T0 + 2, customer="cus_new")]
    traits = mapping.customer_traits([new, gone, old], subs, charges)
    assert traits["stripe_customer_id"] == "cus_new"               # the newest
    assert traits["stripe_customer_ids"] == ["cus_old", "cus_new"]  # every live one
    assert traits["stripe_created_at"] == mapping.iso(T0 - 100 * DAY)  # the oldest
    assert traits["stripe_subscription_status"] == "active"
    assert traits["stripe_plan_name"] == "Team"
    assert traits["stripe_active_subscriptions"] == 2
    assert traits["stripe_mrr"] == 49.0 + 29.0                     # active + past_due
    assert traits["stripe_total_spent"] == 59.0
    assert traits["stripe_charge_count"] == 2
    assert traits["stripe_failed_charge_count"] == 1


def test_refunds_are_netted_from_lifetime_spend() -> None:
    charges = [charge(10000, created=T0, refunded=10000),       # fully refunded
               charge(5000, created=T0 + 1, refunded=1250),     # partly
               charge(2000, created=T0 + 2)]
    traits = mapping.customer_traits([customer()], [], charges)
    assert traits["stripe_total_spent"] == 57.5
    assert traits["stripe_total_refunded"] == 112.5
    assert traits["stripe_charge_count"] == 3
    assert traits["stripe_last_charge_amount"] == 20.0


def test_mixed_currencies_only_the_primary_currency_is_summed() -> None:
    s = sub("active", items=[item(price(9900, currency="eur"))])
    other = sub("active", created=T0 - 10, items=[item(price(2900, currency="usd"))])
    charges = [charge(9900, "eur", created=T0), charge(2900, "usd", created=T0 + 5),
               charge(100000, "jpy", created=T0 + 6)]
    traits = mapping.customer_traits([customer()], [s, other], charges)
    assert traits["stripe_currency"] == "eur"
    assert traits["stripe_total_spent"] == 99.0
    assert traits["stripe_mrr"] == 99.0
    assert traits["stripe_plan_amount"] == 99.0
    assert traits["stripe_charge_count"] == 3  # any currency
    assert traits["stripe_last_charge_amount"] == 100000.0  # in its own (zero-decimal) one
    # Without a subscription the latest charge decides the currency.
    no_sub = mapping.customer_traits([customer()], [], charges)
    assert (no_sub["stripe_currency"], no_sub["stripe_total_spent"]) == ("jpy", 100000.0)


def test_spend_is_in_the_currency_paid_when_the_plan_is_in_another() -> None:
    """The demo's "£0.00 lifetime spend": a GBP subscription while every payment was in
    USD. Spend is counted in the currency the customer paid in, and says so."""
    gbp = sub("active", items=[item(price(12900, currency="gbp"))])
    charges = [charge(2900, "usd", created=T0), charge(4900, "usd", created=T0 + 5,
                                                        refunded=900)]
    traits = mapping.customer_traits([customer()], [gbp], charges)
    assert traits["stripe_currency"] == "gbp"            # MRR and plan: the subscription's
    assert (traits["stripe_mrr"], traits["stripe_plan_amount"]) == (129.0, 129.0)
    assert traits["stripe_spend_currency"] == "usd"
    assert (traits["stripe_total_spent"], traits["stripe_total_refunded"]) == (69.0, 9.0)
    assert (traits["stripe_last_charge_amount"], traits["stripe_last_charge_currency"]) \
        == (49.0, "usd")
    # Paid in both: the subscription's currency wins, the other is never added to it.
    both = charges + [charge(12900, "gbp", created=T0 + 9)]
    traits = mapping.customer_traits([customer()], [gbp], both)
    assert (traits["stripe_spend_currency"], traits["stripe_total_spent"]) == ("gbp", 129.0)
    assert traits["stripe_last_charge_currency"] == "gbp"
    # Nothing paid: spend is 0 in the subscription's currency; no last-charge currency.
    unpaid = mapping.customer_traits([customer()], [gbp], [charge(900, "usd", "failed")])
    assert (unpaid["stripe_spend_currency"], unpaid["stripe_total_spent"]) == ("gbp", 0.0)
    assert unpaid["stripe_last_charge_currency"] is None


def test_spend_currency_rule() -> None:
    usd, gbp = {"currency": "usd"}, {"currency": "GBP"}
    assert mapping.spend_currency_of("gbp", [usd, gbp]) == "gbp"
    assert mapping.spend_currency_of("eur", [gbp, usd]) == "usd"   # the latest payment's
    assert mapping.spend_currency_of("eur", []) == "eur"
    assert mapping.spend_currency_of(None, [usd]) == "usd"


def test_every_money_trait_names_its_currency_trait() -> None:
    """Each money trait is shown in its own currency: the screens read its
    ``currency_trait`` (and the fallback for customers synced before it existed)."""
    specs = {d["key"]: d for d in mapping.TRAIT_DEFINITIONS}
    money = {k for k, d in specs.items() if d.get("format") == "money"}
    assert money == {"stripe_plan_amount", "stripe_mrr", "stripe_total_spent",
                     "stripe_total_refunded", "stripe_last_charge_amount"}
    for key in money:
        assert specs[key]["currency_trait"] in specs, key
    assert specs["stripe_total_spent"]["currency_trait"] == "stripe_spend_currency"
    assert specs["stripe_last_charge_amount"]["currency_trait"] == "stripe_last_charge_currency"
    assert specs["stripe_total_spent"]["currency_fallback_trait"] == "stripe_currency"
    from crowdpower.formatting import format_trait

    traits = mapping.customer_traits(
        [customer()], [sub("active", items=[item(price(12900, currency="gbp"))])],
        [charge(47600, "usd", created=T0)])
    assert format_trait("stripe_total_spent", traits, specs).text == "$476.00"
    assert format_trait("stripe_mrr", traits, specs).text == "£129.00"
    assert format_trait("stripe_last_charge_amount", traits, specs).text == "$476.00"


def test_failed_charges_set_last_payment_failed_at() -> None:
    charges = [charge(500, status="failed", created=T0 + 30, failure_code="card_declined"),
               charge(500, status="failed", created=T0 + 10),
               charge(500, created=T0 + 20)]
    traits = mapping.customer_traits([customer()], [], charges)
    assert traits["stripe_last_payment_failed_at"] == mapping.iso(T0 + 30)
    assert traits["stripe_failed_charge_count"] == 2
    assert traits["stripe_charge_count"] == 1
    assert traits["stripe_total_spent"] == 5.0  # failed charges are not spend
    assert traits["stripe_last_charge_at"] == mapping.iso(T0 + 20)


def test_deleted_customers_only_clear_every_trait() -> None:
    traits = mapping.customer_traits([customer(deleted=True)], [sub()], [charge()])
    assert traits == dict.fromkeys(mapping.TRAIT_KEYS)
    assert mapping.customer_traits([], [], []) == dict.fromkeys(mapping.TRAIT_KEYS)


def test_trialing_and_canceled_primary_details() -> None:
    trial = sub("trialing", trial_start=T0, trial_end=T0 + 14 * DAY,
                items=[item(price(1000, interval="month", count=3), period_end=T0 + 14 * DAY)])
    traits = mapping.customer_traits([customer()], [trial], [])
    assert traits["stripe_subscription_status"] == "trialing"
    assert traits["stripe_trial_end_at"] == mapping.iso(T0 + 14 * DAY)
    assert traits["stripe_plan_interval"] == "3 month"
    assert traits["stripe_mrr"] == 0.0 and traits["stripe_active_subscriptions"] == 1
    ended = sub("canceled", canceled_at=T0 + 3)
    traits = mapping.customer_traits([customer()], [ended], [])
    assert traits["stripe_subscription_status"] == "canceled"
    assert traits["stripe_canceled_at"] == mapping.iso(T0 + 3)
    assert traits["stripe_active_subscriptions"] == 0


# -- events -------------------------------------------------------------------------------

def _sub_for_events(status: str = "active", **over: Any) -> dict:
    return sub(status, items=[item(price(2900, nickname="Pro monthly"), 2)], **over)


EVENT_CASES = [
    ("customer.subscription.created", lambda: _sub_for_events(), None,
     {"status": "active", "plan_name": "Pro monthly", "amount": 58.0, "mrr": 58.0,
      "quantity": 2, "currency": "usd", "plan_interval": "month"}),
    ("customer.subscription.deleted",
     lambda: _sub_for_events(status="canceled", canceled_at=T0 + 9), None,
     {"status": "canceled", "canceled_at": mapping.iso(T0 + 9), "mrr": 0.0}),
    ("customer.subscription.trial_will_end",
     lambda: sub("trialing", trial_end=T0 + 3 * DAY), None,
     {"status": "trialing", "trial_end_at": mapping.iso(T0 + 3 * DAY), "mrr": 0.0}),
    ("charge.succeeded", lambda: charge(1999, "eur", description="Pro"), None,
     {"amount": 19.99, "currency": "eur", "status": "succeeded", "description": "Pro",
      "failure_code": None, "refunded": False, "amount_refunded": 0.0}),
    ("charge.failed",
     lambda: charge(2900, status="failed", failure_code="insufficient_funds",
                    failure_message="Your card has insufficient funds."), None,
     {"amount": 29.0, "currency": "usd", "status": "failed",
      "failure_code": "insufficient_funds",
      "failure_message": "Your card has insufficient funds."}),
    ("charge.refunded", lambda: charge(5000, refunded=1500), {"amount_refunded": 0},
     {"amount": 50.0, "amount_refunded": 15.0, "refunded": False}),
]


@pytest.mark.parametrize(("type_", "make", "previous", "expected"), EVENT_CASES,
                         ids=[c[0] for c in EVENT_CASES])
def test_event_properties(type_: str, make: Any, previous: dict | None,
                          expected: dict) -> None:
    obj = make()
    ev = event(type_, obj, previous, eid="evt_x")
    props = mapping.event_properties(ev)
    assert mapping.event_name(ev) == mapping.EVENT_NAMES[type_]
    assert {k: props[k] for k in expected} == expected
    assert props["stripe_event_id"] == "evt_x" and props["livemode"] is False
    assert props[("subscription_id" if "subscription" in type_ else "charge_id")] == obj["id"]
    assert mapping.event_customer_id(ev) == "cus_a"
    definition = next(d for d in mapping.EVENT_DEFINITIONS
                      if d["name"] == mapping.EVENT_NAMES[type_])
    assert set(props) - {"stripe_event_id", "livemode"} <= set(definition["properties"])


def test_subscription_updated_properties_say_what_changed() -> None:
    old_price = price(900, nickname="Starter")
    now = sub("active", items=[item(price(2900, nickname="Pro"), 1)])
    previous = {"status": "trialing",
                "items": {**now["items"], "data": [item(old_price, 1)]}}
    props = mapping.event_properties(event("customer.subscription.updated", now, previous))
    assert props["changed"] == ["items", "status"]
    assert props["previous_status"] == "trialing"
    assert props["previous_plan_name"] == "Starter"
    assert props["plan_name"] == "Pro" and props["status"] == "active"
    toggled = mapping.event_properties(event("customer.subscription.updated",
                                             sub(cancel_at_period_end=True),
                                             {"cancel_at_period_end": False}))
    assert toggled["changed"] == ["cancel_at_period_end"]
    assert "previous_status" not in toggled and "previous_plan_name" not in toggled
    assert toggled["cancel_at_period_end"] is True
    names = mapping.event_properties(
        event("customer.subscription.updated", sub(items=[item(price(product="prod_9"))]),
              {"items": {"data": [item(price(product="prod_8"))]}}),
        {"prod_8": "Old", "prod_9": "New"})
    assert (names["previous_plan_name"], names["plan_name"]) == ("Old", "New")


def test_invoice_upcoming_properties() -> None:
    # As Stripe sends it: the invoice's own period is the one ending (T0 - 30 days … T0);
    # the billed period is on the line items (T0 … T0 + 30 days).
    invoice = fixture("invoice", id=None, amount_due=8700, currency="gbp", customer="cus_a",
                      period_start=T0 - 30 * DAY, period_end=T0,
                      next_payment_attempt=T0 + 30 * DAY)
    line = dict(invoice["lines"]["data"][0]) if invoice["lines"]["data"] else {}
    invoice["lines"] = {**invoice["lines"], "data": [
        {**line, "period": {"start": T0, "end": T0 + 30 * DAY}}]}
    invoice["parent"] = {"type": "subscription_details", "quote_details": None,
                         "subscription_details": {"metadata": {}, "subscription": "sub_9"}}
    ev = event("invoice.upcoming", invoice)
    props = mapping.event_properties(ev)
    assert props == {"subscription_id": "sub_9", "amount_due": 87.0, "currency": "gbp",
                     "period_start_at": mapping.iso(T0),
                     "period_end_at": mapping.iso(T0 + 30 * DAY),
                     "next_payment_attempt_at": mapping.iso(T0 + 30 * DAY),
                     "stripe_event_id": "evt_1", "livemode": False}
    assert mapping.event_name(ev) == "Stripe Invoice Upcoming"
    assert mapping.event_customer_id(ev) == "cus_a"


def test_events_we_do_not_record() -> None:
    ev = event("customer.created", customer("cus_z"))
    assert mapping.event_name(ev) is None
    assert mapping.event_customer_id(ev) == "cus_z"
    assert mapping.event_properties(ev) == {"stripe_event_id": "evt_1", "livemode": False}
    assert len(mapping.EVENT_NAMES) == 8


# -- event_object_key ----------------------------------------------------------------------

def test_object_key_tells_two_partial_refunds_apart() -> None:
    first = event("charge.refunded", charge(5000, refunded=1000), {"amount_refunded": 0},
                  eid="evt_1")
    second = event("charge.refunded", charge(5000, refunded=2000), {"amount_refunded": 1000},
                   eid="evt_2")
    assert mapping.event_object_key(first) != mapping.event_object_key(second)


def test_object_key_tells_two_updates_of_one_subscription_apart() -> None:
    s = sub("active")
    canceling = event("customer.subscription.updated", {**s, "cancel_at_period_end": True},
                      {"cancel_at_period_end": False}, eid="evt_1")
    past_due = event("customer.subscription.updated", {**s, "status": "past_due"},
                     {"status": "active"}, eid="evt_2")
    assert mapping.event_object_key(canceling) != mapping.event_object_key(past_due)
    # Same new value, different old one: trial converted vs dunning recovered.
    from_trial = event("customer.subscription.updated", s, {"status": "trialing"})
    recovered = event("customer.subscription.updated", s, {"status": "past_due"})
    assert mapping.event_object_key(from_trial) != mapping.event_object_key(recovered)


@pytest.mark.parametrize(("type_", "make", "previous"), [
    ("charge.failed", lambda: charge(900, status="failed"), None),
    ("charge.refunded", lambda: charge(5000, refunded=1000), {"amount_refunded": 0}),
    ("customer.subscription.updated", lambda: sub(status="past_due"), {"status": "active"}),
    ("customer.subscription.created", lambda: sub(), None),
    ("customer.subscription.trial_will_end", lambda: sub("trialing", trial_end=T0), None),
])
def test_object_key_is_equal_for_twin_events(type_: str, make: Any,
                                             previous: dict | None) -> None:
    obj = make()
    one = event(type_, obj, previous, eid="evt_1", created=T0)
    twin = event(type_, copy.deepcopy(obj), copy.deepcopy(previous), eid="evt_2",
                 created=T0 + 1)
    assert mapping.event_object_key(one) == mapping.event_object_key(twin)
    assert mapping.event_object_key(one).startswith(f"{type_}:{obj['id']}")


def test_object_key_of_upcoming_invoices_is_per_subscription_and_period() -> None:
    def upcoming(sub_id: str, end: int) -> dict:
        inv = fixture("invoice", id=None, period_end=end)
        inv["parent"] = {"type": "subscription_details",
                         "subscription_details": {"subscription": sub_id}}
        return event("invoice.upcoming", inv)

    assert mapping.event_object_key(upcoming("sub_1", T0)) == \
        mapping.event_object_key(upcoming("sub_1", T0))
    assert mapping.event_object_key(upcoming("sub_1", T0)) != \
        mapping.event_object_key(upcoming("sub_1", T0 + 30 * DAY))
    assert mapping.event_object_key(upcoming("sub_1", T0)) != \
        mapping.event_object_key(upcoming("sub_2", T0))


def test_mapping_agrees_with_the_doubles_objects() -> None:
    """The double's rendered objects (the shapes the sync reads) map without surprises."""
    from crowdpower_stripe_double import StripeDouble

    double = StripeDouble()
    acct = double.create_account()
    cus = double.create_customer(acct, email="d@shop.test", created=T0)
    p = double.create_price(acct, 12900, "gbp", interval="month", interval_count=3,
                            nickname="Business quarterly")
    s = double.create_subscription(acct, cus["id"], p["id"], quantity=2)
    ch = double.create_charge(acct, cus["id"], 25800, "gbp")
    refunded = double.refund_charge(acct, ch["id"], 800)
    traits = mapping.customer_traits([cus], [s], [refunded])
    assert traits["stripe_plan_name"] == "Business quarterly"
    assert traits["stripe_plan_interval"] == "3 month"
    assert traits["stripe_plan_amount"] == 258.0
    assert traits["stripe_mrr"] == 86.0
    assert traits["stripe_total_spent"] == 250.0
    events = double.objects(acct, "event")
    updated = double.update_subscription(acct, s["id"], cancel_at_period_end=True)
    assert updated["cancel_at_period_end"] is True
    ev = double.objects(acct, "event")[-1]
    assert mapping.event_properties(ev)["changed"] == ["cancel_at", "cancel_at_period_end"]
    assert len({mapping.event_object_key(e) for e in events}) == len(events)


# -- forever discounts in MRR (Stripe's definition) -------------------------------------

@pytest.mark.parametrize(("discounts", "expected"), [
    ([], 5800.0),                                                         # 2 × 29.00
    ([{"source": {"coupon": {"duration": "forever", "percent_off": 25}}}], 4350.0),
    ([{"coupon": {"duration": "forever", "amount_off": 800}}], 5000.0),   # legacy shape
    ([{"source": {"coupon": {"duration": "once", "percent_off": 50}}}], 5800.0),
    ([{"source": {"coupon": {"duration": "repeating", "amount_off": 100}}}], 5800.0),
    (["di_unexpanded"], 5800.0),
    ([{"source": {"coupon": {"duration": "forever", "amount_off": 99999}}}], 0.0),
])
def test_mrr_applies_forever_discounts(discounts: list, expected: float) -> None:
    s = sub("active", items=[item(price(2900), 2)], discounts=discounts)
    assert mapping.subscription_mrr(s) == pytest.approx(expected)


def test_yearly_amount_off_is_spread_over_twelve_months() -> None:
    s = sub("active", items=[item(price(12000, interval="year"))],
            discounts=[{"source": {"coupon": {"duration": "forever", "amount_off": 2400}}}])
    assert mapping.subscription_mrr(s) == pytest.approx((12000 - 2400) / 12)


def test_deleted_and_refund_properties() -> None:
    gone = sub("canceled", canceled_at=T0 + DAY, ended_at=T0 + DAY,
               cancellation_details={"comment": None, "feedback": None,
                                     "reason": "payment_failed"})
    props = mapping.event_properties({"id": "evt_1", "type": "customer.subscription.deleted",
                                      "data": {"object": gone}})
    assert props["ended_at"] == mapping.iso(T0 + DAY)
    assert props["cancellation_reason"] == "payment_failed"
    assert props["plan_amount"] == props["amount"] == 29.0
    refunded = charge(1000)
    refunded.update(refunded=True, amount_refunded=1000, receipt_url="https://pay.test/r",
                    payment_intent="pi_1")
    props = mapping.event_properties({"id": "evt_2", "type": "charge.refunded",
                                      "data": {"object": refunded}})
    assert props["fully_refunded"] is True and props["amount_refunded"] == 10.0
    assert props["receipt_url"] == "https://pay.test/r" and props["payment_intent"] == "pi_1"


# -- real shapes (issue 12): tiers, decimals, metered items, captures ------------------

VOLUME = [{"up_to": 5, "unit_amount": 1000, "flat_amount": None},
          {"up_to": None, "unit_amount": 800, "flat_amount": 200}]
GRADUATED = [{"up_to": 5, "unit_amount": 1000, "flat_amount": 500},
             {"up_to": 10, "unit_amount": 800, "flat_amount": None},
             {"up_to": None, "unit_amount_decimal": "700.5", "flat_amount": None}]


@pytest.mark.parametrize(("over", "quantity", "expected"), [
    ({"billing_scheme": "tiered", "tiers_mode": "volume", "tiers": VOLUME}, 3, 3000.0),
    ({"billing_scheme": "tiered", "tiers_mode": "volume", "tiers": VOLUME}, 6, 5000.0),
    ({"billing_scheme": "tiered", "tiers_mode": "graduated", "tiers": GRADUATED}, 3, 3500.0),
    ({"billing_scheme": "tiered", "tiers_mode": "graduated", "tiers": GRADUATED}, 12,
     5500.0 + 4000.0 + 1401.0),
    ({"billing_scheme": "tiered", "tiers_mode": "volume", "tiers": None}, 3, 0.0),  # not listed
    ({"unit_amount": None, "unit_amount_decimal": "0.25"}, 1000, 250.0),
    ({"transform_quantity": {"divide_by": 10, "round": "up"}}, 25, 3 * 2900.0),
    ({"transform_quantity": {"divide_by": 10, "round": "down"}}, 25, 2 * 2900.0),
])
def test_item_amount_of_real_price_shapes(over: dict, quantity: int, expected: float) -> None:
    p = {**price(2900), **over}
    assert mapping.item_amount(item(p, quantity)) == pytest.approx(expected)


def test_metered_items_are_no_recurring_revenue() -> None:
    metered = price(5)
    metered["recurring"] = {**metered["recurring"], "usage_type": "metered"}
    s = sub(items=[item(price(2900)), item(metered, None)])
    assert mapping.subscription_mrr(s) == pytest.approx(2900.0)


def test_with_prices_completes_tiers_from_the_listed_price() -> None:
    bare = {**price(0), "id": "price_t", "billing_scheme": "tiered", "tiers_mode": "volume",
            "unit_amount": None, "unit_amount_decimal": None}
    s = sub(items=[item(bare, 6)])
    assert mapping.subscription_mrr(s) == 0.0
    listed = {**bare, "tiers": VOLUME}
    assert mapping.subscription_mrr(mapping.with_prices(s, {"price_t": listed})) == 5000.0


@pytest.mark.parametrize(("status", "refunded_", "over", "kept", "refunded"), [
    ("succeeded", 0, {}, 1000, 0),
    ("succeeded", 0, {"captured": False, "amount_captured": 0}, 0, 0),  # authorised only
    ("succeeded", 400, {"amount_captured": 600}, 600, 0),   # partial capture: 400 released
    ("succeeded", 500, {"amount_captured": 600}, 500, 100),  # … then 100 refunded
    ("succeeded", 250, {}, 750, 250),
    ("failed", 0, {}, 0, 0),
])
def test_captured_net(status: str, refunded_: int, over: dict, kept: int,
                      refunded: int) -> None:
    got = mapping.captured_net(charge(1000, status=status, refunded=refunded_, **over))
    assert got == (kept, refunded)


def test_lost_disputes_come_off_lifetime_spend() -> None:
    paid = [charge(5000, created=T0), charge(3000, created=T0 + 1)]
    disputes = [{"status": "lost", "amount": 3000, "currency": "usd"},
                {"status": "won", "amount": 5000, "currency": "usd"}]
    traits = mapping.customer_traits([customer()], [], paid, disputes=disputes)
    assert traits["stripe_total_spent"] == 50.0 and traits["stripe_charge_count"] == 2
