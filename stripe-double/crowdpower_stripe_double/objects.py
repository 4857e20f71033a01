"""Stripe object shapes, built from Stripe's own example objects (``fixtures.json``).

``fixtures.json`` holds the resources we need from Stripe's OpenAPI ``fixtures3.json``
(MIT, see ``LICENSE-fixtures``), so every field name and nesting matches Stripe's
current API. The double stores only the fields that change (a small "core" dict per
object) and renders the full object on the way out: ``{**template, **core}``. That
keeps 100k customers with their subscriptions and charges in a few hundred MB.
Nested template values are shared between rendered objects and must not be mutated.
"""

from __future__ import annotations

import json
import secrets
import string
from pathlib import Path
from typing import Any

_FIXTURES = json.loads((Path(__file__).with_name("fixtures.json")).read_text())
_ALPHABET = string.ascii_letters + string.digits

try:  # the API version the installed SDK speaks (the double answers in it)
    import stripe as _stripe

    API_VERSION = _stripe.api_version
except Exception:  # pragma: no cover - stripe is a dependency
    API_VERSION = "2026-10-28.endive"


def new_id(prefix: str, n: int = 24) -> str:
    """An id in Stripe's style (``cus_…``, ``sub_…``)."""
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(n))


def _template(kind: str, **overrides: Any) -> dict:
    base = json.loads(json.dumps(_FIXTURES[kind]))
    base.update(overrides)
    return base


_NULLS = dict.fromkeys
CUSTOMER = _template("customer", discount=None, email=None, name=None, address=None,
                     shipping=None, description=None, phone=None, metadata={})
PRODUCT = _template("product", description=None, package_dimensions=None, images=[],
                    metadata={}, type="service", default_price=None)
PRICE = _template("price", custom_unit_amount=None, transform_quantity=None, nickname=None,
                  metadata={})
SUBSCRIPTION = _template(
    "subscription",
    **_NULLS(["application", "application_fee_percent", "billing_cycle_anchor_config",
              "cancel_at", "canceled_at", "ended_at", "default_payment_method",
              "default_source", "description", "latest_invoice", "next_pending_invoice_item_invoice",
              "on_behalf_of", "pause_collection", "pending_invoice_item_interval",
              "pending_setup_intent", "pending_update", "schedule", "test_clock",
              "transfer_data", "trial_end", "trial_start", "customer_account",
              "billing_thresholds"]),
    cancellation_details={"comment": None, "feedback": None, "reason": None},
    discounts=[], metadata={}, cancel_at_period_end=False,
)
SUBSCRIPTION_ITEM = _template("subscription_item", discounts=[], metadata={}, tax_rates=[],
                              billing_thresholds=None)
CHARGE = _template("charge", **_NULLS(["application", "application_fee",
                                       "application_fee_amount", "failure_balance_transaction",
                                       "failure_code", "failure_message", "on_behalf_of",
                                       "payment_intent", "receipt_email", "receipt_number",
                                       "review", "shipping", "source", "source_transfer",
                                       "statement_descriptor", "statement_descriptor_suffix",
                                       "transfer_data", "transfer_group", "customer"]),
                   metadata={}, fraud_details={}, disputed=False)
REFUND = _template("refund", metadata={}, reason=None, receipt_number=None)
INVOICE = _template("invoice", discounts=[], metadata={}, last_finalization_error=None,
                    from_invoice=None, parent=None, shipping_cost=None, status="draft")
EVENT = _template("event")
ACCOUNT = _template("account", metadata={})

_OUTCOME_OK = {"network_status": "approved_by_network", "reason": None, "risk_level": "normal",
               "risk_score": 20, "seller_message": "Payment complete.", "type": "authorized"}


def customer(core: dict) -> dict:
    if core.get("deleted"):
        return {"id": core["id"], "object": "customer", "deleted": True}
    return {**CUSTOMER, **core}


def product(core: dict) -> dict:
    return {**PRODUCT, **core}


def price(core: dict, products: dict | None = None, expand_product: bool = False,
          include_tiers: bool = False) -> dict:
    """A price; ``tiers`` only when asked for (``expand[]=tiers``), as Stripe includes them."""
    out = {**PRICE, **{k: v for k, v in core.items() if k != "tiers"}}
    out.setdefault("billing_scheme", "per_unit")
    out.setdefault("tiers_mode", None)
    if "unit_amount_decimal" not in core:
        unit = core.get("unit_amount")
        out["unit_amount_decimal"] = None if unit is None else str(unit)
    if include_tiers and out["billing_scheme"] == "tiered":
        out["tiers"] = [dict(t) for t in core.get("tiers") or []]
    if expand_product and products is not None and core.get("product") in products:
        out["product"] = product(products[core["product"]])
    return out


def coupon(core: dict) -> dict:
    return {"object": "coupon", "amount_off": None, "currency": None, "duration_in_months": None,
            "max_redemptions": None, "metadata": {}, "name": None, "percent_off": None,
            "redeem_by": None, "times_redeemed": 1, "valid": True, **core}


def discount(core: dict, coupons: dict | None = None, expand_coupon: bool = False) -> dict:
    """A subscription's discount; ``source.coupon`` is an id unless expanded."""
    coupon_id = core["coupon"]
    found = (coupons or {}).get(coupon_id)
    return {"id": core["id"], "object": "discount", "checkout_session": None,
            "customer": core.get("customer"), "customer_account": None,
            "end": core.get("end"), "invoice": None, "invoice_item": None,
            "promotion_code": None, "start": core.get("start"),
            "subscription": core.get("subscription"), "subscription_item": None,
            "source": {"type": "coupon", "coupon": coupon(found) if expand_coupon and found
                       else coupon_id}}


def dispute(core: dict, charge_obj: dict | None = None) -> dict:
    """A dispute; ``charge`` is an id unless expanded."""
    return {"id": core["id"], "object": "dispute", "amount": core["amount"],
            "balance_transactions": [], "charge": charge_obj or core["charge"],
            "created": core["created"], "currency": core["currency"],
            "is_charge_refundable": False, "livemode": core.get("livemode", False),
            "metadata": {}, "payment_intent": None, "reason": core.get("reason", "fraudulent"),
            "status": core["status"], "enhanced_eligibility_types": [],
            "payment_method_details": None}


def subscription(core: dict, prices: dict, products: dict,
                 expand_product: bool = False, discounts: list[dict] | None = None) -> dict:
    """``discounts``: the rendered discounts (objects when expanded, else ids)."""
    items = []
    for item in core["items"]:
        p = prices.get(item["price"]) or {"id": item["price"]}
        rendered_price = price(p, products, expand_product)
        recurring = p.get("recurring") or {}
        plan = {"active": True, "amount": p.get("unit_amount"),
                "amount_decimal": rendered_price.get("unit_amount_decimal"),
                "billing_scheme": rendered_price.get("billing_scheme", "per_unit"),
                "created": p.get("created"), "currency": p.get("currency"), "id": p["id"],
                "interval": (p.get("recurring") or {}).get("interval"),
                "interval_count": (p.get("recurring") or {}).get("interval_count", 1),
                "livemode": core.get("livemode", False), "metadata": {}, "meter": None,
                "nickname": p.get("nickname"), "object": "plan", "product": p.get("product"),
                "tiers_mode": rendered_price.get("tiers_mode"),
                "transform_usage": rendered_price.get("transform_quantity"),
                "trial_period_days": None,
                "usage_type": recurring.get("usage_type", "licensed")}
        if plan["usage_type"] == "metered":
            item = {k: v for k, v in item.items() if k != "quantity"}  # metered: no quantity
        items.append({**SUBSCRIPTION_ITEM, **item, "price": rendered_price, "plan": plan,
                      "subscription": core["id"], "object": "subscription_item"})
    out = {**SUBSCRIPTION, **{k: v for k, v in core.items() if k not in ("items", "discounts")}}
    out["discounts"] = discounts if discounts is not None else []
    out["items"] = {"object": "list", "data": items, "has_more": False,
                    "total_count": len(items), "url": f"/v1/subscription_items?subscription={core['id']}"}
    out["billing_cycle_anchor"] = core.get("billing_cycle_anchor", core.get("created"))
    return out


def charge(core: dict, refunds: list[dict] | None = None) -> dict:
    """A charge. ``captured``/``amount_captured`` come from the core (an uncaptured or a
    partially captured card payment; the released rest of a partial capture is refunded,
    as Stripe does); ``disputed`` is set when a dispute was opened."""
    out = {**CHARGE, **{k: v for k, v in core.items() if k != "amount_captured"}}
    failed = core.get("status") == "failed"
    out["paid"] = not failed
    out["captured"] = False if failed else core.get("captured", True)
    out["amount_captured"] = 0 if failed or not out["captured"] else \
        core.get("amount_captured", core["amount"])
    out["outcome"] = ({"network_status": "declined_by_network", "reason": core.get("failure_code"),
                       "risk_level": "normal", "risk_score": 30,
                       "seller_message": "The bank did not return any further details.",
                       "type": "issuer_declined"} if failed else _OUTCOME_OK)
    out["billing_details"] = {**CHARGE["billing_details"], "email": core.get("receipt_email"),
                              "name": core.get("billing_name")}
    out.pop("billing_name", None)
    out["billing_details"]["email"] = core.get("billing_email", out["billing_details"]["email"])
    out.pop("billing_email", None)
    rendered = [{**REFUND, **r, "customer": core.get("customer")} for r in (refunds or [])]
    out["refunds"] = {"object": "list", "data": rendered, "has_more": False,
                      "total_count": len(rendered), "url": f"/v1/charges/{core['id']}/refunds"}
    return out


def refund(core: dict) -> dict:
    return {**REFUND, **core}


def upcoming_invoice(sub: dict, lines: list[tuple[int, str, int, int]], period_start: int,
                     period_end: int, created: int, customer_email: str | None) -> dict:
    """The invoice of ``invoice.upcoming``: a preview, so it has no id yet.

    As Stripe's: the invoice's own ``period_start``/``period_end`` is the period that is
    ending (when its pending items were collected); each line's ``period`` is the service
    period being billed, the next one. ``lines``: ``(amount, item id, start, end)``.
    """
    rendered = [{"amount": amount, "currency": sub.get("currency"), "description": None,
                 "id": new_id("il"), "object": "line_item",
                 "livemode": sub.get("livemode", False),
                 "period": {"start": start, "end": end}, "quantity": 1,
                 "metadata": {}, "discount_amounts": [], "discountable": True, "discounts": [],
                 "parent": {"type": "subscription_item_details",
                            "subscription_item_details": {"subscription": sub["id"],
                                                          "subscription_item": item_id,
                                                          "proration": False,
                                                          "invoice_item": None}}}
                for amount, item_id, start, end in lines]
    amount_due = sum(line[0] for line in lines)
    return {**INVOICE, "id": None, "object": "invoice", "customer": sub["customer"],
            "customer_email": customer_email, "amount_due": amount_due, "amount_paid": 0,
            "amount_remaining": amount_due, "subtotal": amount_due, "total": amount_due,
            "total_excluding_tax": amount_due, "subtotal_excluding_tax": amount_due,
            "currency": sub.get("currency"), "created": created, "livemode": sub.get("livemode"),
            "period_start": period_start, "period_end": period_end,
            "next_payment_attempt": min((line[2] for line in lines), default=period_end),
            "due_date": None, "effective_at": None,
            "billing_reason": "upcoming", "attempt_count": 0, "attempted": False,
            "webhooks_delivered_at": None, "number": None, "hosted_invoice_url": None,
            "invoice_pdf": None,
            "parent": {"type": "subscription_details", "quote_details": None,
                       "subscription_details": {"metadata": {}, "subscription": sub["id"]}},
            "lines": {"object": "list", "data": rendered, "has_more": False,
                      "url": "/v1/invoices/upcoming/lines"}}


def event(event_id: str, type_: str, obj: dict, created: int, livemode: bool,
          account: str | None, previous_attributes: dict | None = None) -> dict:
    data: dict[str, Any] = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    out = {**EVENT, "id": event_id, "object": "event", "type": type_, "created": created,
           "livemode": livemode, "api_version": API_VERSION, "data": data,
           "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None}}
    if account:
        out["account"] = account
    return out


def account(core: dict) -> dict:
    return {**ACCOUNT, **core}


def error(status: int, type_: str, message: str, code: str | None = None,
          param: str | None = None) -> tuple[int, dict]:
    """Stripe's error body."""
    body: dict[str, Any] = {"type": type_, "message": message}
    if code:
        body["code"] = code
        body["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param:
        body["param"] = param
    return status, {"error": body}


def missing(kind: str, obj_id: str) -> tuple[int, dict]:
    return error(404, "invalid_request_error", f"No such {kind}: '{obj_id}'",
                 code="resource_missing", param="id")
