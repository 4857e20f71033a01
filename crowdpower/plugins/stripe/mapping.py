"""Pure functions from Stripe objects to CrowdPower traits and events.

No I/O and no app context here, so every rule is a table test away. The sync and the
webhook path both compute a customer's traits with ``customer_traits`` over all the
Stripe objects linked to that CrowdPower customer; whichever ran last, the result is
the same function of the newest data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from crowdpower.services import iso as services_iso

# Currencies Stripe counts in whole units (https://stripe.com/docs/currencies#zero-decimal).
ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx",
                "vnd", "vuv", "xaf", "xof", "xpf"}
# ... and those it counts in thousandths (https://stripe.com/docs/currencies#three-decimal).
THREE_DECIMAL = {"bhd", "jod", "kwd", "omr", "tnd"}

# The primary subscription is the most "alive" one; ties go to the newest.
STATUS_RANK = {"active": 0, "trialing": 1, "past_due": 2, "unpaid": 3, "paused": 4,
               "incomplete": 5, "canceled": 6, "incomplete_expired": 7}
BILLING = ("active", "trialing", "past_due")          # counted as active subscriptions
PAYING = ("active", "past_due")                       # counted in MRR
MONTHS_PER = {"day": 12 / 365, "week": 12 / 52, "month": 1.0, "year": 12.0}

TRAIT_DEFINITIONS: list[dict[str, str]] = [
    {"key": "stripe_customer_id", "name": "Stripe customer ID", "type": "string",
     "description": "The Stripe customer (the newest, when several share an email)."},
    {"key": "stripe_customer_ids", "name": "Stripe customer IDs", "type": "list",
     "description": "Every Stripe customer linked to this customer."},
    {"key": "stripe_created_at", "name": "Stripe customer since", "type": "date",
     "description": "When the (oldest linked) Stripe customer was created."},
    {"key": "stripe_livemode", "name": "Stripe live mode", "type": "boolean",
     "description": "False for test-mode data."},
    {"key": "stripe_currency", "name": "Stripe currency", "type": "string",
     "description": "Currency of the money traits (of the primary subscription, else the "
                    "latest charge)."},
    {"key": "stripe_subscription_status", "name": "Subscription status", "type": "string",
     "description": "Status of the primary subscription, or none."},
    {"key": "stripe_active_subscriptions", "name": "Active subscriptions", "type": "number",
     "description": "Subscriptions that are active, trialing or past due."},
    {"key": "stripe_plan_name", "name": "Plan", "type": "string",
     "description": "Price nickname or product name of the primary subscription."},
    {"key": "stripe_plan_interval", "name": "Plan interval", "type": "string",
     "description": "day, week, month or year (with a count: 3 month)."},
    {"key": "stripe_plan_amount", "name": "Plan amount", "type": "number",
     "description": "Price × quantity per interval of the primary subscription."},
    {"key": "stripe_mrr", "name": "MRR", "type": "number",
     "description": "Monthly recurring revenue of active and past-due subscriptions."},
    {"key": "stripe_trial_end_at", "name": "Trial ends", "type": "date",
     "description": "Trial end of the primary subscription."},
    {"key": "stripe_current_period_end_at", "name": "Current period ends", "type": "date",
     "description": "When the primary subscription renews (or ends)."},
    {"key": "stripe_cancel_at_period_end", "name": "Cancels at period end", "type": "boolean",
     "description": "The primary subscription will not renew."},
    {"key": "stripe_canceled_at", "name": "Canceled at", "type": "date",
     "description": "When the primary subscription was canceled."},
    {"key": "stripe_delinquent", "name": "Delinquent", "type": "boolean",
     "description": "Stripe marks the customer delinquent (an unpaid invoice)."},
    {"key": "stripe_total_spent", "name": "Lifetime spend", "type": "number",
     "description": "Captured amounts minus refunds and lost disputes, in "
                    "stripe_spend_currency."},
    {"key": "stripe_total_refunded", "name": "Refunded", "type": "number",
     "description": "Refunds, in stripe_spend_currency."},
    {"key": "stripe_spend_currency", "name": "Spend currency", "type": "string",
     "description": "Currency of lifetime spend and refunds: stripe_currency if the "
                    "customer paid in it, else the currency of the latest payment."},
    {"key": "stripe_charge_count", "name": "Successful charges", "type": "number",
     "description": "Succeeded charges (any currency)."},
    {"key": "stripe_failed_charge_count", "name": "Failed charges", "type": "number",
     "description": "Failed charges (any currency)."},
    {"key": "stripe_last_charge_at", "name": "Last charge", "type": "date",
     "description": "The latest succeeded charge."},
    {"key": "stripe_last_charge_amount", "name": "Last charge amount", "type": "number",
     "description": "Amount of the latest succeeded charge, in "
                    "stripe_last_charge_currency."},
    {"key": "stripe_last_charge_currency", "name": "Last charge currency", "type": "string",
     "description": "Currency of the latest succeeded charge."},
    {"key": "stripe_last_payment_failed_at", "name": "Last failed payment", "type": "date",
     "description": "The latest failed charge."},
]
# How the screens show them (crowdpower.formatting): each money trait in the currency
# trait beside it (customers synced before the spend and last-charge currencies existed
# have only ``stripe_currency``, read second).
MONEY_CURRENCY: dict[str, tuple[str, str | None]] = {  # trait → (currency, fallback)
    "stripe_plan_amount": ("stripe_currency", None),
    "stripe_mrr": ("stripe_currency", None),
    "stripe_total_spent": ("stripe_spend_currency", "stripe_currency"),
    "stripe_total_refunded": ("stripe_spend_currency", "stripe_currency"),
    "stripe_last_charge_amount": ("stripe_last_charge_currency", "stripe_currency"),
}
for _d in TRAIT_DEFINITIONS:
    _d["group"] = "Stripe"
    if _d["key"] in MONEY_CURRENCY:
        _d["format"] = "money"
        _d["currency_trait"], _fallback = MONEY_CURRENCY[_d["key"]]
        if _fallback:
            _d["currency_fallback_trait"] = _fallback
    elif _d["key"] in {c for pair in MONEY_CURRENCY.values() for c in pair if c}:
        _d["format"] = "currency"
    elif _d["key"] in ("stripe_customer_id", "stripe_customer_ids"):
        _d["format"] = "code" if _d["type"] == "string" else "list"
TRAIT_KEYS = [d["key"] for d in TRAIT_DEFINITIONS]

EVENT_NAMES = {
    "customer.subscription.created": "Stripe Subscription Created",
    "customer.subscription.updated": "Stripe Subscription Updated",
    "customer.subscription.deleted": "Stripe Subscription Deleted",
    "customer.subscription.trial_will_end": "Stripe Subscription Trial Will End",
    "charge.succeeded": "Stripe Charge Succeeded",
    "charge.failed": "Stripe Charge Failed",
    "charge.refunded": "Stripe Charge Refunded",
    "invoice.upcoming": "Stripe Invoice Upcoming",
}
_SUB_PROPS = ["subscription_id", "status", "plan_name", "plan_interval", "plan_amount",
              "amount", "currency", "quantity", "mrr", "trial_end_at", "current_period_end_at",
              "cancel_at_period_end", "canceled_at", "ended_at", "cancellation_reason"]
_CHARGE_PROPS = ["charge_id", "amount", "currency", "status", "failure_code", "failure_message",
                 "description", "receipt_url", "payment_intent", "amount_refunded", "refunded",
                 "fully_refunded"]
EVENT_DEFINITIONS: list[dict[str, Any]] = [
    {"name": "Stripe Subscription Created", "properties": _SUB_PROPS,
     "description": "A customer started a subscription (or a trial)."},
    {"name": "Stripe Subscription Updated",
     "properties": _SUB_PROPS + ["changed", "previous_status", "previous_plan_name"],
     "description": "A subscription changed: plan, quantity, status, cancellation…"},
    {"name": "Stripe Subscription Deleted", "properties": _SUB_PROPS,
     "description": "A subscription ended (canceled now, or at the end of its period)."},
    {"name": "Stripe Subscription Trial Will End", "properties": _SUB_PROPS,
     "description": "A trial ends in three days."},
    {"name": "Stripe Charge Succeeded", "properties": _CHARGE_PROPS,
     "description": "A payment went through."},
    {"name": "Stripe Charge Failed", "properties": _CHARGE_PROPS,
     "description": "A payment was declined or failed (dunning starts here)."},
    {"name": "Stripe Charge Refunded", "properties": _CHARGE_PROPS,
     "description": "A charge was refunded, fully or partly."},
    {"name": "Stripe Invoice Upcoming",
     "properties": ["subscription_id", "amount_due", "currency", "period_start_at",
                    "period_end_at", "next_payment_attempt_at"],
     "description": "A subscription renews soon (Stripe's notice, days ahead)."},
]

_MONEY_PROPS = {"amount": "money", "amount_refunded": "money", "mrr": "money",
                "amount_due": "money"}
_SENTENCES = {
    "Stripe Subscription Created": "Subscribed to {plan_name}[ at {amount:money}][ / {plan_interval}]",
    "Stripe Subscription Updated": "Subscription updated[: {changed}][ — now {status}]",
    "Stripe Subscription Deleted": "Subscription to {plan_name} ended",
    "Stripe Subscription Trial Will End": "Trial of {plan_name} ends[ {trial_end_at:datetime}]",
    "Stripe Charge Succeeded": "Charge of {amount:money} succeeded[ — {description}]",
    "Stripe Charge Failed": "Charge of {amount:money} failed[ — {failure_message}]",
    "Stripe Charge Refunded": "Charge of {amount:money} refunded[ ({amount_refunded:money} back)]",
    "Stripe Invoice Upcoming": "Invoice of {amount_due:money} coming[ {next_payment_attempt_at:datetime}]",
}
for _d in EVENT_DEFINITIONS:
    _d["formats"] = {k: v for k, v in _MONEY_PROPS.items() if k in _d["properties"]}
    _d["sentence"] = _SENTENCES[_d["name"]]


# -- small pieces -----------------------------------------------------------------------

def to_major(amount: int | None, currency: str | None) -> float | None:
    """Stripe's integer minor units → a float in major units (1999 usd → 19.99)."""
    if amount is None:
        return None
    currency = (currency or "").lower()
    if currency in ZERO_DECIMAL:
        return float(amount)
    if currency in THREE_DECIMAL:
        return round(amount / 1000, 3)
    return round(amount / 100, 2)


def iso(ts: int | None) -> str | None:
    """A Unix timestamp → ISO 8601 UTC (``2026-11-25T12:00:00Z``)."""
    return services_iso(ts, seconds=True)


def _id(value: Any) -> str | None:
    return value.get("id") if isinstance(value, dict) else value


def items_of(sub: dict) -> list[dict]:
    return list((sub.get("items") or {}).get("data") or [])


def price_of(item: dict) -> dict:
    price = item.get("price") or item.get("plan") or {}
    return price if isinstance(price, dict) else {"id": price}


def plan_name(price: dict, product_names: dict[str, str] | None = None) -> str | None:
    """The price's nickname, else its product's name (expanded, or from ``product_names``)."""
    if price.get("nickname"):
        return price["nickname"]
    product = price.get("product")
    if isinstance(product, dict):
        return product.get("name")
    if product and product_names:
        return product_names.get(product)
    return None


def interval_of(price: dict) -> str | None:
    recurring = price.get("recurring") or {}
    interval = recurring.get("interval") or price.get("interval")
    if not interval:
        return None
    count = recurring.get("interval_count") or price.get("interval_count") or 1
    return interval if count == 1 else f"{count} {interval}"


def quantity_of(item: dict) -> int:
    """An item's quantity: 1 when absent, but 0 stays 0 (a zero-seat item bills nothing)."""
    quantity = item.get("quantity")
    return 1 if quantity is None else int(quantity)


def is_metered(price: dict) -> bool:
    """Usage-based prices bill what was used, so they are no recurring revenue (Stripe's MRR
    leaves them out)."""
    recurring = price.get("recurring") or {}
    return (recurring.get("usage_type") or price.get("usage_type")) == "metered"


def unit_amount_of(price: dict) -> float | None:
    """The per-unit amount in minor units, fractions kept (``unit_amount_decimal`` wins)."""
    decimal = price.get("unit_amount_decimal") or price.get("amount_decimal")
    if decimal not in (None, ""):
        return float(decimal)
    unit = price.get("unit_amount")
    if unit is None:
        unit = price.get("amount")
    return None if unit is None else float(unit)


def _tier_unit(tier: dict) -> float:
    decimal = tier.get("unit_amount_decimal")
    return float(decimal) if decimal not in (None, "") else float(tier.get("unit_amount") or 0)


def tiered_amount(price: dict, quantity: int) -> float | None:
    """A ``billing_scheme=tiered`` price for ``quantity`` units (None without its tiers).

    ``volume``: every unit at the price of the tier the total falls in, plus its flat fee;
    ``graduated``: each tier's units at that tier's price, plus each reached tier's flat fee.
    """
    tiers = price.get("tiers")
    if not tiers:
        return None
    if quantity <= 0:
        return 0.0
    if price.get("tiers_mode") == "graduated":
        total, below = 0.0, 0
        for tier in tiers:
            up_to = tier.get("up_to")
            units = quantity - below if up_to is None else min(quantity, up_to) - below
            if units <= 0:
                break
            total += units * _tier_unit(tier) + float(tier.get("flat_amount") or 0)
            if up_to is None or quantity <= up_to:
                break
            below = up_to
        return total
    for tier in tiers:  # volume
        if tier.get("up_to") is None or quantity <= tier["up_to"]:
            return quantity * _tier_unit(tier) + float(tier.get("flat_amount") or 0)
    return None


def billed_quantity(price: dict, quantity: int) -> int:
    """``transform_quantity``: units divided (``divide_by``) and rounded ``up`` or ``down``."""
    transform = price.get("transform_quantity") or price.get("transform_usage")
    if not transform or not transform.get("divide_by"):
        return quantity
    divide_by = int(transform["divide_by"])
    whole, rest = divmod(quantity, divide_by)
    return whole + (1 if rest and transform.get("round") == "up" else 0)


def item_amount(item: dict) -> float:
    """What one item bills per interval, in minor units (fractions of a cent kept).

    Metered items bill usage, not a set amount: 0 here. Tiered prices need their
    ``tiers`` (Stripe includes them only when asked: the sync lists prices with them).
    """
    price = price_of(item)
    if is_metered(price):
        return 0.0
    quantity = billed_quantity(price, quantity_of(item))
    if price.get("billing_scheme") == "tiered":
        return tiered_amount(price, quantity) or 0.0
    return (unit_amount_of(price) or 0.0) * quantity


def months_of(price: dict) -> float:
    recurring = price.get("recurring") or {}
    interval = recurring.get("interval") or price.get("interval") or "month"
    count = recurring.get("interval_count") or price.get("interval_count") or 1
    return MONTHS_PER.get(interval, 1.0) * count


def item_monthly(item: dict) -> float:
    """An item's amount per month, in minor units."""
    return item_amount(item) / months_of(price_of(item))


def with_prices(sub: dict, prices: dict[str, dict]) -> dict:
    """The subscription with its items' prices completed from ``prices`` (by id): tiers and
    other fields Stripe leaves out of a subscription's embedded prices."""
    items = items_of(sub)
    if not prices or not any(price_of(i).get("id") in prices for i in items):
        return sub
    merged = []
    for item in items:
        price = price_of(item)
        full = prices.get(price.get("id") or "")
        merged.append({**item, "price": {**full, **{k: v for k, v in price.items()
                                                    if v is not None}}} if full else item)
    return {**sub, "items": {**(sub.get("items") or {}), "data": merged}}


def forever_coupons(sub: dict) -> list[dict]:
    """Coupons of the subscription's discounts that last forever (they count in MRR).

    Discounts must be expanded with their coupon (``discounts[].source.coupon`` since API
    2025, ``discount.coupon`` before); unexpanded ids are ignored.
    """
    found = []
    for discount in list(sub.get("discounts") or []) + [sub.get("discount")]:
        if not isinstance(discount, dict):
            continue
        coupon = discount.get("coupon") or (discount.get("source") or {}).get("coupon")
        if isinstance(coupon, dict) and coupon.get("duration") == "forever":
            found.append(coupon)
    return found


def subscription_mrr(sub: dict) -> float:
    """Monthly recurring revenue of one subscription in minor units (0 unless paying).

    Stripe's definition: active and past-due subscriptions, each licensed item's amount
    (per unit, decimal or tiered, ``transform_quantity`` applied) normalised to a month,
    metered items left out, less forever discounts (percent, or an amount per invoice).
    """
    if sub.get("status") not in PAYING:
        return 0.0
    items = [i for i in items_of(sub) if not is_metered(price_of(i))]
    monthly = sum(item_monthly(i) for i in items)
    for coupon in forever_coupons(sub):
        if coupon.get("percent_off"):
            monthly *= max(0.0, 1 - float(coupon["percent_off"]) / 100)
        elif coupon.get("amount_off") and items:
            monthly -= float(coupon["amount_off"]) / months_of(price_of(items[0]))
    return max(0.0, monthly)


def period_end(sub: dict) -> int | None:
    """Current period end (on items since API 2025-03-31; top level before)."""
    ends = [i.get("current_period_end") for i in items_of(sub) if i.get("current_period_end")]
    return max(ends) if ends else sub.get("current_period_end")


def primary_subscription(subs: Iterable[dict]) -> dict | None:
    ranked = sorted(subs, key=lambda s: (STATUS_RANK.get(s.get("status", ""), 9),
                                         -(s.get("created") or 0)))
    return ranked[0] if ranked else None


# -- traits -----------------------------------------------------------------------------

def captured_net(charge: dict) -> tuple[int, int]:
    """``(kept, refunded)`` of a succeeded charge, in its minor units: what was captured,
    less refunds of captured money. An uncaptured authorisation counts nothing; the part
    of a partial capture Stripe releases shows as refunded but was never received."""
    if charge.get("status") != "succeeded" or charge.get("captured") is False:
        return 0, 0
    amount = int(charge.get("amount") or 0)
    captured = int(charge["amount_captured"]) if charge.get("amount_captured") is not None \
        else amount
    refunded = max(0, int(charge.get("amount_refunded") or 0) - (amount - captured))
    return captured - refunded, refunded


def spend_currency_of(currency: str | None, succeeded: list[dict]) -> str | None:
    """The currency lifetime spend is counted in: ``stripe_currency`` when the customer
    paid in it, else the currency of their latest payment (a GBP subscription paid in
    USD charges is USD spend, not £0.00). Amounts in other currencies are not added:
    money in different currencies is never summed."""
    paid = [(c.get("currency") or "").lower() for c in succeeded if c.get("currency")]
    if currency in paid or not paid:
        return currency
    return paid[-1]


@dataclass(frozen=True)
class ChargeSummary:
    """What the traits need of a customer's charges: a few totals, not the history.

    ``summarize_charges`` is the definition; the mirror computes the same in SQL
    (``store``), so a customer's traits cost the same however many charges they have.
    """

    succeeded: int = 0                  # succeeded and not uncaptured, any currency
    failed: int = 0
    last_failed_at: int | None = None   # the newest failure's ``created`` (None: none)
    last: dict | None = None            # the newest succeeded charge, (created, id) order
    last_paid_currency: str | None = None  # of the newest succeeded charge naming one
    totals: dict[str, tuple[int, int]] = field(default_factory=dict)
    # lower-cased currency ("" when none) → (kept, refunded) of its succeeded charges


def charge_order(charge: dict) -> tuple[Any, str]:
    """The order succeeded charges are taken in (the latest last)."""
    return (charge.get("created") or 0, charge.get("id") or "")


def summarize_charges(charges: Iterable[dict]) -> ChargeSummary:
    """The ``ChargeSummary`` of these charges."""
    charges = list(charges)
    succeeded = sorted((c for c in charges if c.get("status") == "succeeded"
                        and c.get("captured") is not False), key=charge_order)
    failed = [c for c in charges if c.get("status") == "failed"]
    totals: dict[str, tuple[int, int]] = {}
    for c in succeeded:
        key = (c.get("currency") or "").lower()
        kept, refunded = captured_net(c)
        before = totals.get(key, (0, 0))
        totals[key] = (before[0] + kept, before[1] + refunded)
    paid = [(c.get("currency") or "").lower() for c in succeeded if c.get("currency")]
    return ChargeSummary(
        succeeded=len(succeeded), failed=len(failed),
        last_failed_at=max(c.get("created") or 0 for c in failed) if failed else None,
        last=succeeded[-1] if succeeded else None,
        last_paid_currency=paid[-1] if paid else None, totals=totals)


def customer_traits(customers: list[dict], subscriptions: list[dict], charges: list[dict],
                    product_names: dict[str, str] | None = None,
                    disputes: list[dict] | None = None) -> dict[str, Any]:
    """Every ``stripe_*`` trait of one CrowdPower customer (``None`` = remove the trait).

    ``customers`` are the Stripe customers linked to it (several when they share an
    email): ids are all kept, totals summed, and the primary subscription is chosen
    across them. Money is in major units of ``stripe_currency``.
    """
    return traits_of(customers, subscriptions, summarize_charges(charges), product_names,
                     disputes)


def traits_of(customers: list[dict], subscriptions: list[dict], charges: ChargeSummary,
              product_names: dict[str, str] | None = None,
              disputes: list[dict] | None = None) -> dict[str, Any]:
    """``customer_traits`` from the charges' summary."""
    live = sorted((c for c in customers if not c.get("deleted")),
                  key=lambda c: (c.get("created") or 0, c.get("id") or ""))
    if not live:
        return dict.fromkeys(TRAIT_KEYS)
    primary = primary_subscription(subscriptions)
    last = charges.last
    currency = (primary or {}).get("currency") or (last.get("currency") if last
                                                   else None) or live[-1].get("currency")
    currency = (currency or "").lower() or None

    paid = {k for k in charges.totals if k}
    spend_currency = currency if currency in paid or not paid else charges.last_paid_currency
    spent, refunded = charges.totals.get(spend_currency, (0, 0)) if spend_currency \
        else (0, 0)
    # A lost dispute takes the disputed amount back (won or open ones do not).
    spent -= sum(int(d.get("amount") or 0) for d in disputes or []
                 if d.get("status") == "lost"
                 and (d.get("currency") or "").lower() == spend_currency)
    mrr = sum(subscription_mrr(s) for s in subscriptions
              if (s.get("currency") or "").lower() == currency)
    traits: dict[str, Any] = dict.fromkeys(TRAIT_KEYS)
    traits.update({
        "stripe_customer_id": live[-1]["id"],
        "stripe_customer_ids": [c["id"] for c in live],
        "stripe_created_at": iso(live[0].get("created")),
        "stripe_livemode": bool(live[-1].get("livemode")),
        "stripe_currency": currency,
        "stripe_subscription_status": (primary or {}).get("status") or "none",
        "stripe_active_subscriptions": sum(1 for s in subscriptions
                                           if s.get("status") in BILLING),
        "stripe_delinquent": any(bool(c.get("delinquent")) for c in live),
        "stripe_spend_currency": spend_currency,
        "stripe_total_spent": to_major(spent, spend_currency) if spend_currency else 0.0,
        "stripe_total_refunded": (to_major(refunded, spend_currency) if spend_currency
                                  else 0.0),
        "stripe_charge_count": charges.succeeded,
        "stripe_failed_charge_count": charges.failed,
        "stripe_mrr": to_major(round(mrr), currency) if currency else 0.0,
    })
    if primary is not None:
        items = items_of(primary)
        first = price_of(items[0]) if items else {}
        traits.update({
            "stripe_plan_name": plan_name(first, product_names),
            "stripe_plan_interval": interval_of(first),
            "stripe_plan_amount": to_major(round(sum(item_amount(i) for i in items)),
                                           primary.get("currency")),
            "stripe_trial_end_at": iso(primary.get("trial_end")),
            "stripe_current_period_end_at": iso(period_end(primary)),
            "stripe_cancel_at_period_end": bool(primary.get("cancel_at_period_end")),
            "stripe_canceled_at": iso(primary.get("canceled_at")),
        })
    if last is not None:
        traits["stripe_last_charge_at"] = iso(last.get("created"))
        traits["stripe_last_charge_amount"] = to_major(
            last.get("amount_captured") if last.get("amount_captured") is not None
            else last.get("amount"), last.get("currency"))
        traits["stripe_last_charge_currency"] = (last.get("currency") or "").lower() or None
    if charges.last_failed_at is not None:
        traits["stripe_last_payment_failed_at"] = iso(charges.last_failed_at)
    return traits


# -- events -----------------------------------------------------------------------------

def event_name(event: dict) -> str | None:
    """The CrowdPower event name of a Stripe event type, or None if not one of ours."""
    return EVENT_NAMES.get(event.get("type", ""))


def event_object(event: dict) -> dict:
    return ((event.get("data") or {}).get("object")) or {}


def event_customer_id(event: dict) -> str | None:
    """The Stripe customer an event is about."""
    obj = event_object(event)
    if obj.get("object") == "customer":
        return obj.get("id")
    return _id(obj.get("customer"))


def event_customer_key(event: dict) -> str | None:
    """``event_customer_id`` as the inbox stores it (a string of at most 64 characters,
    else None): what keeps one customer's events in order across drains."""
    try:
        found = event_customer_id(event)
    except AttributeError:  # a malformed object: the drain decides what it is
        return None
    return found if isinstance(found, str) and found and len(found) <= 64 else None


def event_object_key(event: dict) -> str:
    """What an event changed, to spot twin events (Stripe sometimes emits two for one change).

    ``type:object`` plus what distinguishes two genuine changes of one object of that
    type: the refunded total, the trial end, the renewal period, or for updates a digest
    of the changed fields' old and new values (trialing→active and past_due→active are
    two changes; twins carry the same ``previous_attributes``).
    """
    obj = event_object(event)
    type_ = event.get("type", "")
    oid = obj.get("id")
    if type_ == "invoice.upcoming" or not oid:  # a preview invoice has no id yet
        sub = ((obj.get("parent") or {}).get("subscription_details") or {}).get(
            "subscription") or obj.get("subscription")
        return f"{type_}:{_id(sub)}@{obj.get('period_end')}"
    if type_ == "charge.refunded":
        return f"{type_}:{oid}:{obj.get('amount_refunded')}"
    if type_ == "customer.subscription.trial_will_end":
        return f"{type_}:{oid}:{obj.get('trial_end')}"
    if type_.endswith(".updated"):
        previous = (event.get("data") or {}).get("previous_attributes") or {}
        changed = {k: [previous[k], obj.get(k)] for k in sorted(previous)}
        digest = hashlib.sha1(json.dumps(changed, sort_keys=True, default=str).encode())
        return f"{type_}:{oid}:{digest.hexdigest()[:16]}"
    return f"{type_}:{oid}"


def subscription_properties(sub: dict, product_names: dict[str, str] | None = None
                            ) -> dict[str, Any]:
    items = items_of(sub)
    first = price_of(items[0]) if items else {}
    currency = sub.get("currency") or first.get("currency")
    amount = to_major(round(sum(item_amount(i) for i in items)), currency)
    return {
        "subscription_id": sub.get("id"),
        "status": sub.get("status"),
        "plan_name": plan_name(first, product_names),
        "plan_interval": interval_of(first),
        "plan_amount": amount,
        "amount": amount,
        "currency": currency,
        "quantity": sum(quantity_of(i) for i in items) if items else None,
        "mrr": to_major(round(subscription_mrr(sub)), currency),
        "trial_end_at": iso(sub.get("trial_end")),
        "current_period_end_at": iso(period_end(sub)),
        "cancel_at_period_end": bool(sub.get("cancel_at_period_end")),
        "canceled_at": iso(sub.get("canceled_at")),
        "ended_at": iso(sub.get("ended_at")),
        "cancellation_reason": (sub.get("cancellation_details") or {}).get("reason"),
    }


def charge_properties(charge: dict) -> dict[str, Any]:
    currency = charge.get("currency")
    return {
        "charge_id": charge.get("id"),
        "amount": to_major(charge.get("amount"), currency),
        "currency": currency,
        "status": charge.get("status"),
        "failure_code": charge.get("failure_code"),
        "failure_message": charge.get("failure_message"),
        "description": charge.get("description"),
        "amount_refunded": to_major(charge.get("amount_refunded") or 0, currency),
        "refunded": bool(charge.get("refunded")),
        "fully_refunded": bool(charge.get("refunded")),
        "receipt_url": charge.get("receipt_url"),
        "payment_intent": _id(charge.get("payment_intent")),
    }


def invoice_properties(invoice: dict) -> dict[str, Any]:
    currency = invoice.get("currency")
    sub = ((invoice.get("parent") or {}).get("subscription_details") or {}).get(
        "subscription") or invoice.get("subscription")
    # The billed period is the line items' (an invoice's own period_start/period_end is the
    # period that is ending, when its pending items were collected).
    periods = [line.get("period") or {} for line in (invoice.get("lines") or {}).get("data")
               or []]
    starts = [p["start"] for p in periods if p.get("start")]
    ends = [p["end"] for p in periods if p.get("end")]
    return {
        "subscription_id": _id(sub),
        "amount_due": to_major(invoice.get("amount_due"), currency),
        "currency": currency,
        "period_start_at": iso(min(starts) if starts else invoice.get("period_start")),
        "period_end_at": iso(max(ends) if ends else invoice.get("period_end")),
        "next_payment_attempt_at": iso(invoice.get("next_payment_attempt")),
    }


def event_properties(event: dict, product_names: dict[str, str] | None = None
                     ) -> dict[str, Any]:
    """The properties recorded with the CrowdPower event (plus the Stripe event id)."""
    obj = event_object(event)
    kind = obj.get("object")
    if kind == "subscription":
        props = subscription_properties(obj, product_names)
        previous = (event.get("data") or {}).get("previous_attributes")
        if event.get("type") == "customer.subscription.updated" and previous is not None:
            props["changed"] = sorted(previous)
            if "status" in previous:
                props["previous_status"] = previous["status"]
            old_items = (previous.get("items") or {}).get("data") if isinstance(
                previous.get("items"), dict) else None
            if old_items:
                props["previous_plan_name"] = plan_name(price_of(old_items[0]), product_names)
    elif kind == "charge":
        props = charge_properties(obj)
    elif kind == "invoice":
        props = invoice_properties(obj)
    else:
        props = {}
    props["stripe_event_id"] = event.get("id")
    props["livemode"] = bool(event.get("livemode"))
    return props
