"""A month-end burst of renewals as Stripe sends it: charges, invoices, subscription updates.

Events are built by the Stripe double from its fixture shapes (``objects`` is generated
from the fixtures of /work/shared/stripe/fixtures3.json's kind), for customers the double
has seeded, so every look-up the app makes is answered and every object is one Stripe
would send. The mix (by default): 45% ``charge.succeeded``, 10% ``charge.failed``,
20% ``invoice.paid``/``invoice.payment_succeeded`` (not recorded: the plugin does not use
them, but it must route and mark them), 5% ``invoice.upcoming``, 20%
``customer.subscription.updated`` (a quantity change, or a cancellation at period end
set or undone: upgrades, downgrades and reactivations are derived). Each subscription is
updated (and invoiced) once before any is twice, as in a renewal run.
"""

from __future__ import annotations

import json
import random
import time

MIX = (("charge.succeeded", 45), ("charge.failed", 10), ("invoice.paid", 15),
       ("invoice.payment_succeeded", 5), ("invoice.upcoming", 5),
       ("customer.subscription.updated", 20))


def _invoice(objects, acct, sub: dict) -> dict:
    item = sub["items"]["data"][0]
    amount = (item.get("price") or {}).get("unit_amount") or 0
    return {**objects.INVOICE, "id": objects.new_id("in"), "object": "invoice", "customer": sub["customer"],
            "subscription": sub["id"], "status": "paid", "paid": True,
            "amount_due": amount, "amount_paid": amount, "currency": sub.get("currency"),
            "billing_reason": "subscription_cycle", "created": int(time.time()),
            "period_start": item.get("current_period_start"),
            "period_end": item.get("current_period_end"), "livemode": acct.livemode,
            "parent": {"type": "subscription_details",
                       "subscription_details": {"subscription": sub["id"], "metadata": {}}}}


def make_mixed_events(double, account: str, customers: list[str], n: int,
                      seed: int = 1) -> list[tuple[str, bytes]]:
    """``n`` (id, body) events of the mix above for ``customers`` of ``account``."""
    from crowdpower_stripe_double import objects as O  # noqa: N812

    rng = random.Random(seed)
    state = double.state
    acct = state.account(account)
    wanted = set(customers)
    subs = [s for s in acct.subscriptions.items
            if s.get("customer") in wanted and s.get("status") in ("active", "past_due")]
    kinds = [k for k, w in MIX for _ in range(w)]
    order: dict[str, list[dict]] = {}

    def next_sub(purpose: str) -> dict:
        """Each subscription once (a renewal), in random order, before any twice."""
        if not order.get(purpose):
            order[purpose] = rng.sample(subs, len(subs))
        return order[purpose].pop()

    out: list[tuple[str, bytes]] = []
    now = int(time.time())
    for _ in range(n):
        kind = rng.choice(kinds)
        if kind.startswith("charge.") or (not subs and kind != "charge.failed"):
            failed = kind == "charge.failed"
            charge = state.create_charge(account, rng.choice(customers),
                                         rng.choice([900, 2900, 9900]), "usd",
                                         status="failed" if failed else "succeeded",
                                         emit=False)
            event = O.event(O.new_id("evt"), "charge.failed" if failed else "charge.succeeded",
                            charge, now, acct.livemode, account)
        elif kind == "customer.subscription.updated":
            core = next_sub("update")
            if rng.random() < 0.7:
                quantity = core["items"][0].get("quantity") or 1
                step = rng.choice([-1, 1, 2]) if quantity > 1 else rng.choice([1, 2])
                changes = {"quantity": quantity + step}
            else:
                changes = {"cancel_at_period_end": not core.get("cancel_at_period_end")}
            state.update_subscription(account, core["id"], **changes)
            event = acct.events.items[-1]["body"]
        elif kind == "invoice.upcoming":
            event = state.invoice_upcoming(account, next_sub("upcoming")["id"])
        else:
            sub = acct.render("subscription", next_sub("invoice"))
            event = O.event(O.new_id("evt"), kind, _invoice(O, acct, sub), now,
                            acct.livemode, account)
        out.append((event["id"], json.dumps(event).encode()))
    return out
