"""Pure functions: which revenue lifecycle events one Stripe event implies.

A raw Stripe event says what changed on one object; a subscription business asks what it
means for the customer: did they upgrade, convert from a trial, come back, churn, pay
after a failure? ``derive`` answers from the event itself (``previous_attributes`` for
updates) plus the customer's other mirrored subscriptions and charges *after* the event
was applied, so a duplicate delivery derives the same events under the same keys and a
late, out-of-order delivery derives only what its own change implies. MRR always comes
from ``mapping.subscription_mrr`` (Stripe's definition, one place).

Each derived event is ``Derived(suffix, name, properties)``; the caller records it with
the external id ``<stripe event id>:<suffix>`` (``<failed charge id>:payment_recovered``
for a recovery: a failure is recovered once, whichever of the two charges' events came
last, and whichever of two payments within one second is seen first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crowdpower.plugins.stripe import mapping

TRIAL_STARTED = "Stripe Trial Started"
TRIAL_CONVERTED = "Stripe Trial Converted"
UPGRADED = "Stripe Subscription Upgraded"
DOWNGRADED = "Stripe Subscription Downgraded"
REACTIVATED = "Stripe Subscription Reactivated"
CHURNED = "Stripe Customer Churned"
PAYMENT_RECOVERED = "Stripe Payment Recovered"

ENDED = ("canceled", "incomplete_expired")
RESUMABLE = ("canceled", "paused", "incomplete_expired")

_SUB_PROPS = ["subscription_id", "status", "previous_status", "plan_before", "plan_after",
              "mrr_before", "mrr_after", "mrr_change", "currency", "stripe_event_id",
              "livemode"]
EVENT_DEFINITIONS: list[dict[str, Any]] = [
    {"name": TRIAL_STARTED, "properties": _SUB_PROPS + ["trial_end_at"],
     "description": "A subscription started a free trial (derived from webhooks)."},
    {"name": TRIAL_CONVERTED, "properties": _SUB_PROPS,
     "description": "A trial became a paying subscription (trialing → active)."},
    {"name": UPGRADED, "properties": _SUB_PROPS,
     "description": "A subscription's MRR went up (plan, quantity or discount change)."},
    {"name": DOWNGRADED, "properties": _SUB_PROPS,
     "description": "A subscription's MRR went down (plan, quantity or discount change)."},
    {"name": REACTIVATED, "properties": _SUB_PROPS + ["reason"],
     "description": "A customer came back: a paused or canceled subscription is active "
                    "again, a cancellation at period end was undone, or a customer without "
                    "a live subscription started a new one."},
    {"name": CHURNED, "properties": _SUB_PROPS + ["reason"],
     "description": "The customer's last active, trialing or past-due subscription ended."},
    {"name": PAYMENT_RECOVERED,
     "properties": ["charge_id", "failed_charge_id", "amount", "currency", "failed_at",
                    "failure_code", "payment_intent", "stripe_event_id", "livemode"],
     "description": "A payment succeeded after a failed one (same payment intent when "
                    "Stripe names one, else the customer's next successful charge)."},
]
# How the profile's feed reads them (crowdpower.formatting.render_sentence).
_SENTENCES = {
    TRIAL_STARTED: "Trial[ of {plan_after}] started[, ends {trial_end_at:datetime}]",
    TRIAL_CONVERTED: "Trial[ of {plan_after}] converted to paid[ — MRR {mrr_after:money}]",
    UPGRADED: "Upgraded[ from {plan_before}][ to {plan_after}][ (MRR +{mrr_change:money})]",
    DOWNGRADED: "Downgraded[ from {plan_before}][ to {plan_after}][ (MRR {mrr_change:money})]",
    REACTIVATED: "Came back[ on {plan_after}][ — {reason}]",
    CHURNED: "Churned[ from {plan_before}][ — {reason}]",
    PAYMENT_RECOVERED: "Payment of {amount:money} recovered after a failed one",
}
for _d in EVENT_DEFINITIONS:
    _d["formats"] = {k: "money" for k in ("mrr_before", "mrr_after", "mrr_change", "amount")
                     if k in _d["properties"]}
    _d["sentence"] = _SENTENCES[_d["name"]]
NAMES = [d["name"] for d in EVENT_DEFINITIONS]


@dataclass(frozen=True)
class Derived:
    suffix: str
    name: str
    properties: dict[str, Any] = field(default_factory=dict)


def _mrr(sub: dict) -> float:
    """Minor units per month, by the mapping module's (Stripe's) definition."""
    return mapping.subscription_mrr(sub)


def _major(minor: float, currency: str | None) -> float | None:
    return mapping.to_major(round(minor), currency)


def _plan(sub: dict, names: dict[str, str] | None) -> str | None:
    items = mapping.items_of(sub)
    return mapping.plan_name(mapping.price_of(items[0]), names) if items else None


def _currency(sub: dict) -> str | None:
    items = mapping.items_of(sub)
    currency = sub.get("currency") or (mapping.price_of(items[0]).get("currency")
                                       if items else None)
    return (currency or "").lower() or None


def _sub_props(event: dict, before: dict, after: dict, names: dict[str, str] | None,
               mrr_before: float, mrr_after: float) -> dict[str, Any]:
    currency = _currency(after) or _currency(before)
    b, a = _major(mrr_before, currency), _major(mrr_after, currency)
    return {"subscription_id": after.get("id"), "status": after.get("status"),
            "previous_status": before.get("status"),
            "plan_before": _plan(before, names), "plan_after": _plan(after, names),
            "mrr_before": b, "mrr_after": a,
            "mrr_change": round((a or 0) - (b or 0), 3), "currency": currency,
            "stripe_event_id": event.get("id"), "livemode": bool(event.get("livemode"))}


def previous_state(event: dict) -> dict:
    """The object as it was before an ``*.updated`` event (Stripe's previous_attributes)."""
    obj = mapping.event_object(event)
    previous = (event.get("data") or {}).get("previous_attributes") or {}
    return {**obj, **previous}


def with_prices(event: dict, prices: dict[str, dict]) -> dict:
    """The event with its subscription's prices completed (tiers Stripe leaves out of
    embedded prices), before and after the change, via ``mapping.with_prices``."""
    if not prices:
        return event
    data = dict(event.get("data") or {})
    data["object"] = mapping.with_prices(data.get("object") or {}, prices)
    previous = data.get("previous_attributes")
    if isinstance(previous, dict) and isinstance(previous.get("items"), dict):
        items = mapping.with_prices({"items": previous["items"]}, prices)["items"]
        data["previous_attributes"] = {**previous, "items": items}
    return {**event, "data": data}


def as_active(sub: dict) -> dict:
    return {**sub, "status": "active"}


def derive(event: dict, subscriptions: list[dict], charges: list[dict],
           product_names: dict[str, str] | None = None) -> list[Derived]:
    """The lifecycle events one Stripe event implies for its customer.

    ``subscriptions`` and ``charges`` are all of the customer's (every linked Stripe
    customer's) mirrored objects after the event was applied.
    """
    obj = mapping.event_object(event)
    kind, type_ = obj.get("object"), event.get("type", "")
    if kind == "subscription":
        others = [s for s in subscriptions if s.get("id") != obj.get("id")]
        return _subscription(event, type_, obj, others, product_names)
    if kind == "charge" and type_ in ("charge.succeeded", "charge.failed"):
        return _recovery(event, obj, charges)
    return []


def _subscription(event: dict, type_: str, obj: dict, others: list[dict],
                  names: dict[str, str] | None) -> list[Derived]:
    out: list[Derived] = []
    live_others = [s for s in others if s.get("status") in mapping.BILLING]
    if type_ == "customer.subscription.created":
        if obj.get("status") == "trialing":
            props = _sub_props(event, {}, obj, names, 0.0, 0.0)
            props["trial_end_at"] = mapping.iso(obj.get("trial_end"))
            out.append(Derived("trial_started", TRIAL_STARTED, props))
        if obj.get("status") in mapping.PAYING and not live_others and any(
                s.get("status") in ENDED for s in others):
            props = _sub_props(event, {}, obj, names, 0.0, _mrr(obj))
            props["reason"] = "new_subscription"
            out.append(Derived("reactivated", REACTIVATED, props))
        return out
    if type_ == "customer.subscription.deleted" or (
            type_ == "customer.subscription.updated" and obj.get("status") in ENDED):
        if live_others:
            return out
        before = previous_state(event) if type_.endswith(".updated") else as_active(obj)
        mrr_before = _mrr(before if before.get("status") in mapping.PAYING
                          else as_active(before))
        if before.get("status") == "trialing":
            mrr_before = 0.0
        props = _sub_props(event, before, obj, names, mrr_before, 0.0)
        props["reason"] = (obj.get("cancellation_details") or {}).get("reason")
        out.append(Derived("churned", CHURNED, props))
        return out
    if type_ != "customer.subscription.updated":
        return out
    before = previous_state(event)
    old, new = before.get("status"), obj.get("status")
    mrr_before, mrr_after = _mrr(before), _mrr(obj)
    props = _sub_props(event, before, obj, names, mrr_before, mrr_after)
    if old == "trialing" and new in mapping.PAYING:
        out.append(Derived("trial_converted", TRIAL_CONVERTED, props))
    elif old != "trialing" and new == "trialing" and old is not None:
        out.append(Derived("trial_started", TRIAL_STARTED,
                           {**props, "trial_end_at": mapping.iso(obj.get("trial_end"))}))
    if old in RESUMABLE and new == "active":
        out.append(Derived("reactivated", REACTIVATED, {**props, "reason": "resumed"}))
    elif old == new and new in mapping.BILLING and before.get("cancel_at_period_end") \
            and not obj.get("cancel_at_period_end"):
        out.append(Derived("reactivated", REACTIVATED,
                           {**props, "reason": "cancellation_undone"}))
    if old == new and new in mapping.PAYING and round(mrr_after) != round(mrr_before) \
            and _currency(before) == _currency(obj):
        if mrr_after > mrr_before:
            out.append(Derived("upgraded", UPGRADED, props))
        else:
            out.append(Derived("downgraded", DOWNGRADED, props))
    return out


def _same_payment(a: dict, b: dict) -> bool:
    """Two charges pay for the same thing: same payment intent when both name one."""
    if (a.get("currency") or "").lower() != (b.get("currency") or "").lower():
        return False
    pa, pb = mapping._id(a.get("payment_intent")), mapping._id(b.get("payment_intent"))
    return pa == pb if pa and pb else True


def _order(charge: dict) -> tuple:
    """Time order; within one second (Stripe's resolution) a failure already seen when
    a success arrives counts as before it."""
    return (charge.get("created") or 0, 0 if charge.get("status") == "failed" else 1,
            charge.get("id") or "")


def recovered_failure(success: dict, charges: list[dict]) -> dict | None:
    """The failed charge ``success`` recovers: the latest failure of the same payment
    before it with no other successful charge of that payment in between."""
    prior = sorted((c for c in charges if c.get("id") != success.get("id")
                    and _order(c) <= _order(success) and _same_payment(c, success)),
                   key=_order)
    failure = None
    for charge in prior:
        if charge.get("status") == "failed":
            failure = charge
        elif charge.get("status") == "succeeded":
            failure = None
    return failure


def _recovery(event: dict, obj: dict, charges: list[dict]) -> list[Derived]:
    by_id = {c.get("id"): c for c in charges}
    by_id[obj.get("id")] = {**by_id.get(obj.get("id"), {}), **obj}
    charges = list(by_id.values())
    if obj.get("status") == "succeeded":
        success = obj
    else:  # a failure delivered after the success that recovered it; only a success
        # in a later second counts (within one second, delivery order is all we know)
        later = sorted((c for c in charges if c.get("status") == "succeeded"
                        and (c.get("created") or 0) > (obj.get("created") or 0)
                        and _same_payment(c, obj)), key=_order)
        success = later[0] if later else None
        if success is None:
            return []
    failure = recovered_failure(success, charges)
    if failure is None or (obj.get("status") == "failed" and failure.get("id") != obj.get("id")):
        return []
    currency = success.get("currency")
    props = {"charge_id": success.get("id"), "failed_charge_id": failure.get("id"),
             "amount": mapping.to_major(success.get("amount"), currency),
             "currency": currency, "failed_at": mapping.iso(failure.get("created")),
             "failure_code": failure.get("failure_code"),
             "payment_intent": mapping._id(success.get("payment_intent")),
             "stripe_event_id": event.get("id"), "livemode": bool(event.get("livemode"))}
    return [Derived("payment_recovered", PAYMENT_RECOVERED, props)]


def external_id(event: dict, derived: Derived) -> str:
    """Idempotency key of a derived event (see the module docstring)."""
    if derived.suffix == "payment_recovered":
        return f"{derived.properties['failed_charge_id']}:{derived.suffix}"
    return f"{event.get('id')}:{derived.suffix}"
