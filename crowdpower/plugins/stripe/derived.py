"""Record the lifecycle events (``lifecycle.derive``) a webhook implies.

Called by the webhook path only, after the raw event was recorded and its object
mirrored, never by the initial sync: history imported at connect time is state, not news.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from crowdpower.plugins.stripe import lifecycle, mapping, store
from crowdpower.plugins.stripe.models import StripeCustomerLink, StripeObject
from crowdpower.services import among, db, record_event


def customer_objects(project_id: int, customer_id: int) -> tuple[list[dict], list[dict]]:
    """The mirrored subscriptions and charges of every Stripe customer linked to one
    CrowdPower customer."""
    stripe_ids = list(db.session.scalars(select(StripeCustomerLink.stripe_customer_id).where(
        StripeCustomerLink.project_id == project_id,
        StripeCustomerLink.customer_id == customer_id)))
    subs: list[dict] = []
    charges: list[dict] = []
    if not stripe_ids:
        return subs, charges
    rows = db.session.execute(select(StripeObject.kind, StripeObject.data).where(
        StripeObject.project_id == project_id,
        among(StripeObject.customer_stripe_id, stripe_ids),
        StripeObject.kind.in_(("subscription", "charge"))))
    for kind, data in rows:
        (subs if kind == "subscription" else charges).append(data)
    return subs, charges


def record_derived(project_id: int, customer_id: int, event: dict,
                   occurred_at: datetime) -> list[str]:
    """Record the lifecycle events of ``event``; returns the names newly recorded."""
    subs, charges = customer_objects(project_id, customer_id)
    touched = subs + [mapping.event_object(event), lifecycle.previous_state(event)]
    names = store.product_names(project_id, touched)
    prices = store.tiered_prices(project_id, touched)  # MRR of tiered prices needs tiers
    if prices:
        subs = [mapping.with_prices(s, prices) for s in subs]
        event = lifecycle.with_prices(event, prices)
    recorded = []
    for derived in lifecycle.derive(event, subs, charges, names):
        made = record_event(project_id, customer_id, derived.name, derived.properties,
                            occurred_at=occurred_at, source="stripe",
                            external_id=lifecycle.external_id(event, derived))
        if made is not None:
            recorded.append(derived.name)
    return recorded
