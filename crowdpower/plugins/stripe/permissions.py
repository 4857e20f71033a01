"""The Stripe App's permissions: exactly what CrowdPower reads (see ``stripe-app.json``).

From Stripe's permissions reference (docs.stripe.com/stripe-apps/reference/permissions):
each resource read needs its ``*_read`` permission, expanding an object needs that
object's permission too, and receiving events needs ``event_read`` plus the permission of
the event's object. ``tests/stripe_app`` checks the manifest against this module.
"""

from __future__ import annotations

import json
from pathlib import Path

MANIFEST = Path(__file__).with_name("stripe-app.json")

# What each read we make needs (the list path segment → permission).
PATHS = {"customers": "customer_read", "subscriptions": "subscription_read",
         "charges": "charge_read", "disputes": "dispute_read", "products": "product_read",
         "prices": "plan_read",
         "invoices": "invoice_read", "events": "event_read"}
EXPANDED = {"customer": "customer_read", "product": "product_read", "price": "plan_read",
            "coupon": "coupon_read"}


def permission_for(path: str, params: dict) -> str:
    """The permission a read needs (the first one, by path then expansions)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[1] in PATHS:
        return PATHS[parts[1]]
    for expand in params.get("expand") or []:
        for field in str(expand).split("."):
            if field in EXPANDED:
                return EXPANDED[field]
    return "unknown"


def manifest_permissions() -> set[str]:
    return {p["permission"] for p in json.loads(MANIFEST.read_text())["permissions"]}
