"""The Stripe panel of a customer's profile: subscriptions and recent charges from the
mirror (``stripe_objects``), each linked to the object in Stripe's Dashboard."""

from __future__ import annotations

from flask import render_template
from markupsafe import Markup
from sqlalchemy import select

from crowdpower.plugins.stripe import mapping
from crowdpower.plugins.stripe.models import StripeCustomerLink, StripeObject
from crowdpower.plugins.stripe.store import product_names
from crowdpower.services import db

DASHBOARD = "https://dashboard.stripe.com"
RECENT_CHARGES = 10


def dashboard_url(kind: str, stripe_id: str, livemode: bool) -> str:
    """The object's page in the account's Stripe Dashboard (``/test/`` for test mode)."""
    path = {"customer": "customers", "subscription": "subscriptions",
            "charge": "payments"}[kind]
    return f"{DASHBOARD}{'' if livemode else '/test'}/{path}/{stripe_id}"


def subscription_row(sub: dict, names: dict[str, str]) -> dict:
    """One subscription as the panel shows it (money in major units)."""
    items = mapping.items_of(sub)
    price = mapping.price_of(items[0]) if items else {}
    currency = sub.get("currency") or price.get("currency")
    return {"id": sub.get("id"), "status": sub.get("status"),
            "plan": mapping.plan_name(price, names) or price.get("id") or "—",
            "interval": mapping.interval_of(price),
            "mrr": mapping.to_major(round(mapping.subscription_mrr(sub)), currency),
            "currency": currency, "period_end_at": mapping.iso(mapping.period_end(sub)),
            "cancel_at_period_end": bool(sub.get("cancel_at_period_end")),
            "url": dashboard_url("subscription", sub["id"], bool(sub.get("livemode")))}


def charge_row(charge: dict) -> dict:
    currency = charge.get("currency")
    return {"id": charge.get("id"), "status": charge.get("status"),
            "amount": mapping.to_major(charge.get("amount"), currency), "currency": currency,
            "refunded": mapping.to_major(charge.get("amount_refunded"), currency),
            "failure_message": charge.get("failure_message"),
            "created_at": mapping.iso(charge.get("created")),
            "url": dashboard_url("charge", charge["id"], bool(charge.get("livemode")))}


def panel_data(project_id: int, customer_id: int) -> dict | None:
    stripe_ids = list(db.session.scalars(select(StripeCustomerLink.stripe_customer_id).where(
        StripeCustomerLink.project_id == project_id,
        StripeCustomerLink.customer_id == customer_id)))
    if not stripe_ids:
        return None
    rows = db.session.execute(select(StripeObject.kind, StripeObject.data).where(
        StripeObject.project_id == project_id, StripeObject.deleted.is_(False),
        StripeObject.customer_stripe_id.in_(stripe_ids),
        StripeObject.kind.in_(("customer", "subscription", "charge")))).all()
    customers = [d for k, d in rows if k == "customer"]
    subs = [d for k, d in rows if k == "subscription"]
    charges = sorted((d for k, d in rows if k == "charge"),
                     key=lambda c: c.get("created") or 0, reverse=True)[:RECENT_CHARGES]
    names = product_names(project_id, subs)
    subs.sort(key=lambda s: (mapping.STATUS_RANK.get(s.get("status", ""), 9),
                             -(s.get("created") or 0)))
    return {"customers": [{"id": c["id"], "url": dashboard_url(
                "customer", c["id"], bool(c.get("livemode")))} for c in customers],
            "subscriptions": [subscription_row(s, names) for s in subs],
            "charges": [charge_row(c) for c in charges]}


def customer_panel(project_id: int, customer_id: int) -> dict | None:
    """The panel, attached to the profile's "Stripe" trait group."""
    data = panel_data(project_id, customer_id)
    if data is None:
        return None
    return {"group": "Stripe",
            "html": Markup(render_template("stripe/_profile_panel.html", **data))}
