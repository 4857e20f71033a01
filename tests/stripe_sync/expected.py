"""What a correct sync produces, computed independently: the account read through the SDK.

Customers are grouped the way the issue says CrowdPower groups them (one per email
ignoring case, one per Stripe id without email, deleted ones skipped) and their traits
computed with ``mapping.customer_traits`` over the full Stripe objects.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select

from crowdpower.customers import encode_trait, get_traits
from crowdpower.extensions import db
from crowdpower.models import Customer
from crowdpower.plugins.stripe import mapping
from crowdpower.plugins.stripe.client import stripe_client
from crowdpower.tenancy import project_scope


def account_objects(account: str) -> dict[str, list[dict]]:
    client = stripe_client(account)
    out = {}
    # Expansions stop at Stripe's 4 levels: products are listed, not expanded in prices.
    for kind, path, extra in (("customer", "/v1/customers", {}),
                              ("product", "/v1/products", {}),
                              ("price", "/v1/prices", {"expand": ["data.tiers"]}),
                              ("subscription", "/v1/subscriptions",
                               {"status": "all", "expand": ["data.discounts.source.coupon"]}),
                              ("charge", "/v1/charges", {}),
                              ("dispute", "/v1/disputes", {"expand": ["data.charge"]})):
        items, cursor = [], None
        while True:
            params = {"limit": 100, **extra, **({"starting_after": cursor} if cursor else {})}
            page = client.raw_request("get", path, stripe_account=account, **params).data
            items += page["data"]
            if not page["has_more"]:
                break
            cursor = page["data"][-1]["id"]
        out[kind] = items
    return out


def owner_key(customer: dict) -> str:
    email = (customer.get("email") or "").strip().lower()
    return f"email:{email}" if email else f"id:{customer['id']}"


def expected_traits(account: str) -> dict[str, dict]:
    """``{owner key: traits}`` for every CrowdPower customer the sync must produce."""
    objects = account_objects(account)
    live = [c for c in objects["customer"] if not c.get("deleted")]
    groups: dict[str, dict[str, list]] = defaultdict(
        lambda: {"customer": [], "subscription": [], "charge": [], "dispute": []})
    owner = {}
    for c in live:
        owner[c["id"]] = owner_key(c)
        groups[owner[c["id"]]]["customer"].append(c)
    for kind in ("subscription", "charge", "dispute"):
        for obj in objects[kind]:
            cus = (obj.get("charge") or {}).get("customer") if kind == "dispute" \
                else obj.get("customer")
            cus = cus.get("id") if isinstance(cus, dict) else cus
            if cus in owner:
                groups[owner[cus]][kind].append(obj)
    names = {p["id"]: p["name"] for p in objects["product"]}
    prices = {p["id"]: p for p in objects["price"]}
    return {key: encoded(mapping.customer_traits(
        g["customer"], [mapping.with_prices(s, prices) for s in g["subscription"]],
        g["charge"], names, disputes=g["dispute"])) for key, g in groups.items()}


def encoded(traits: dict) -> dict:
    return {k: encode_trait(v)[0] for k, v in traits.items() if v is not None}


def actual_traits(project_id: int, only_stripe: bool = True) -> dict[str, dict]:
    """``{owner key: traits}`` of the project's customers (stripe_ traits by default)."""
    with project_scope(project_id):
        customers = list(db.session.scalars(select(Customer).where(
            Customer.project_id == project_id).order_by(Customer.id)))
    traits = get_traits(project_id, [c.id for c in customers])
    out = {}
    for c in customers:
        key = f"email:{c.email_key}" if c.email_key else f"id:{c.external_id}"
        assert key not in out, f"duplicate customer for {key}"
        out[key] = {k: v for k, v in traits[c.id].items()
                    if k.startswith("stripe_") or not only_stripe}
    return out
