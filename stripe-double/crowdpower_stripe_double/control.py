"""The double's control page (``/_double/``) and its JSON twin (``/_double/api/…``).

For the demo and manual testing: seed accounts, fire billing events for a customer
("charge failed for ann@example.com"), see webhook deliveries and resend one. It is
a developer tool on loopback, so it has no login and no CSRF protection; never
expose the double beyond localhost.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from markupsafe import escape
from werkzeug.wrappers import Request, Response

if TYPE_CHECKING:  # pragma: no cover
    from crowdpower_stripe_double.server import StripeDouble

ACTIONS = {
    "charge_succeeded": "Charge succeeded",
    "charge_failed": "Charge failed",
    "charge_refunded": "Refund the latest charge",
    "subscription_created": "Subscription created",
    "subscription_updated": "Subscription updated (toggle cancel at period end)",
    "subscription_past_due": "Subscription goes past due",
    "subscription_deleted": "Subscription canceled",
    "trial_will_end": "Trial will end",
    "invoice_upcoming": "Invoice upcoming",
    "customer_created": "New customer (uses the email)",
    # Revenue lifecycle changes (each is one or more real Stripe events).
    "trial_started": "Trial started (a new 14-day trial subscription)",
    "trial_converted": "Trial converts to a paid subscription",
    "subscription_upgraded": "Upgrade (a price twice as high, or the amount given)",
    "subscription_downgraded": "Downgrade (a price half as high, or the amount given)",
    "subscription_reactivated": "Reactivate (undo cancel at period end, resume, or "
                                "resubscribe)",
    "customer_churned": "Churn (cancel every live subscription)",
    "payment_recovered": "Payment fails, then the retry succeeds",
    "charge_authorized": "Charge authorised, not captured",
    "charge_captured_partially": "Capture part of the latest authorisation",
    "dispute_lost": "Dispute of the latest charge, lost",
    "dispute_won": "Dispute of the latest charge, won",
    "guest_charge": "Guest charge (no customer; uses the email as billing email)",
    "customer_deleted": "Delete the customer",
}

STYLE = """body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:980px;color:#1a1a2e}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;font-size:.9rem}
.err{color:#b00020}.ok{color:#0a7d32}button{background:#635bff;color:#fff;border:0;
border-radius:6px;padding:.45rem .9rem;cursor:pointer}button.secondary{background:#8a8fa3}
input,select{padding:.3rem;margin:.2rem}.card{border:1px solid #ddd;border-radius:10px;
padding:1rem 1.4rem;margin:1rem 0}code{background:#f4f4f8;padding:0 .2rem}"""


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>")


def consent_page(double: StripeDouble, params: Any, action: str = "/oauth/authorize") -> str:
    """Stripe's "Connect your account" page, reduced to Approve/Deny and an account pick."""
    hidden = "".join(f'<input type=hidden name="{escape(k)}" value="{escape(v)}">'
                     for k, v in params.items() if k not in ("decision", "account"))
    options = "".join(
        f'<option value="{escape(a.id)}"{" selected" if a.id == double.oauth_next_account else ""}>'
        f'{escape(a.id)} — {escape(a.email or a.name or "account")} '
        f'({len(a.customers)} customers)</option>'
        for a in double.state.accounts.values() if a.id != "acct_platform")
    what = (f'with <code>{escape(params.get("scope") or "read_only")}</code> access'
            if action == "/oauth/authorize" else
            "as a Stripe App (" + ", ".join(sorted(double.apps.permissions)) + ")")
    body = f"""<div class=card><p><b>CrowdPower</b> would like to connect to your Stripe
account {what}.</p>
<form method=post action="{escape(action)}">{hidden}
<p><label>Account <select name=account>{options}<option value="">A new, empty account
</option></select></label></p>
<button name=decision value=approve>Connect my Stripe account</button>
<button class=secondary name=decision value=deny>Deny</button></form></div>
<p>This is the Stripe double's consent page (a stand-in for connect.stripe.com).</p>"""
    return page("Stripe Connect (double)", body)


def simulate(double: StripeDouble, account: str, action: str, customer: str | None = None,
             email: str | None = None, amount: int | None = None) -> dict:
    """Fire one billing event for a customer (found by id or email) of ``account``."""
    state = double.state
    acct = state.account(account)
    if action == "customer_created":
        obj = state.create_customer(account, email=email or f"new{int(time.time())}@demo.test",
                                    name="New Customer")
        return {"customer": obj["id"], "event": "customer.created"}
    if action == "guest_charge":
        obj = state.create_charge(account, None, amount or 4200, "usd",
                                  billing_email=email or "guest@demo.test")
        return {"charge": obj["id"], "event": "charge.succeeded"}
    cus = None
    with state.lock:
        if customer:
            cus = acct.customers.get(customer)
        elif email:
            wanted = email.strip().lower()
            cus = next((c for c in reversed(acct.customers.items) if not c.get("deleted")
                        and (c.get("email") or "").lower() == wanted), None)
        if cus is None or cus.get("deleted"):
            raise LookupError("customer", customer or email or "")
        subs = [acct.subscriptions.items[p] for p in acct.subscriptions.by_customer.get(
            cus["id"], [])]
        live = [s for s in subs if s["status"] not in ("canceled", "incomplete_expired")]
        sub = live[-1] if live else None
        charges = [acct.charges.items[p] for p in acct.charges.by_customer.get(cus["id"], [])]
        price = acct.prices.get(sub["items"][0]["price"]) if sub else (
            acct.prices.items[0] if acct.prices.items else None)
    requested = amount  # None: each action picks its own amount
    currency = (price or {}).get("currency", "usd")
    amount = amount or (price or {}).get("unit_amount") or 2900
    if action in ("charge_succeeded", "charge_failed"):
        obj = state.create_charge(account, cus["id"], amount, currency,
                                  status="succeeded" if action == "charge_succeeded" else "failed",
                                  failure_code="insufficient_funds" if action == "charge_failed"
                                  else None,
                                  failure_message="Your card has insufficient funds."
                                  if action == "charge_failed" else None)
        return {"charge": obj["id"], "event": f"charge.{obj['status']}"}
    if action == "charge_authorized":
        obj = state.create_charge(account, cus["id"], amount, currency, captured=False,
                                  emit=False)
        return {"charge": obj["id"], "event": None}
    if action == "charge_captured_partially":
        held = [c for c in charges if c.get("captured") is False]
        if not held:
            raise ValueError("this customer has no uncaptured charge")
        obj = state.capture_charge(account, held[-1]["id"], max(1, held[-1]["amount"] // 2))
        return {"charge": obj["id"], "event": "charge.captured"}
    if action in ("dispute_lost", "dispute_won"):
        paid = [c for c in charges if c["status"] == "succeeded"]
        if not paid:
            raise ValueError("this customer has no succeeded charge")
        obj = state.dispute_charge(account, paid[-1]["id"], action.split("_")[1])
        return {"dispute": obj["id"], "event": "charge.dispute.closed"}
    if action == "customer_deleted":
        state.delete_customer(account, cus["id"])
        return {"customer": cus["id"], "event": "customer.deleted"}
    if action == "charge_refunded":
        done = [c for c in charges if c["status"] == "succeeded" and not c["refunded"]]
        if not done:
            raise ValueError("this customer has no refundable charge")
        obj = state.refund_charge(account, done[-1]["id"])
        return {"charge": obj["id"], "event": "charge.refunded"}
    if action == "subscription_created":
        if price is None:
            price = state.create_price(account, 2900, "usd", product_name="Pro")
        obj = state.create_subscription(account, cus["id"], price["id"])
        return {"subscription": obj["id"], "event": "customer.subscription.created"}
    lifecycle = _lifecycle(state, account, action, cus, sub, subs, price, requested)
    if lifecycle is not None:
        return lifecycle
    if sub is None:
        raise ValueError("this customer has no live subscription")
    if action == "subscription_updated":
        obj = state.update_subscription(account, sub["id"],
                                        cancel_at_period_end=not sub["cancel_at_period_end"])
        return {"subscription": obj["id"], "event": "customer.subscription.updated"}
    if action == "subscription_past_due":
        obj = state.update_subscription(account, sub["id"], status="past_due")
        return {"subscription": obj["id"], "event": "customer.subscription.updated"}
    if action == "subscription_deleted":
        obj = state.cancel_subscription(account, sub["id"])
        return {"subscription": obj["id"], "event": "customer.subscription.deleted"}
    if action == "trial_will_end":
        state.trial_will_end(account, sub["id"])
        return {"subscription": sub["id"], "event": "customer.subscription.trial_will_end"}
    if action == "invoice_upcoming":
        state.invoice_upcoming(account, sub["id"])
        return {"subscription": sub["id"], "event": "invoice.upcoming"}
    raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")


def _lifecycle(state: Any, account: str, action: str, cus: dict, sub: dict | None,
               subs: list[dict], price: dict | None, amount: int | None) -> dict | None:
    """The revenue lifecycle actions: each drives the Stripe objects as Stripe would."""
    if action == "trial_started":
        if price is None:
            price = state.create_price(account, 2900, "usd", product_name="Pro")
        obj = state.create_subscription(account, cus["id"], price["id"], trial_days=14)
        return {"subscription": obj["id"], "event": "customer.subscription.created"}
    if action == "payment_recovered":
        currency = (price or {}).get("currency", "usd")
        value = amount or (price or {}).get("unit_amount") or 2900
        failed = state.create_charge(account, cus["id"], value, currency, status="failed",
                                     failure_code="card_declined")
        time.sleep(1.05)  # Stripe's timestamps are whole seconds: the retry is later
        ok = state.create_charge(account, cus["id"], value, currency)
        return {"charge": ok["id"], "failed_charge": failed["id"], "event": "charge.succeeded"}
    if action == "subscription_reactivated":
        if sub is not None and sub.get("cancel_at_period_end"):
            obj = state.update_subscription(account, sub["id"], cancel_at_period_end=False)
        elif sub is not None and sub["status"] == "paused":
            obj = state.update_subscription(account, sub["id"], status="active")
        elif sub is None and subs:
            last = subs[-1]["items"][0]
            obj = state.create_subscription(account, cus["id"], last["price"],
                                            quantity=last.get("quantity", 1))
            return {"subscription": obj["id"], "event": "customer.subscription.created"}
        else:
            raise ValueError("nothing to reactivate: the subscription is active and not "
                             "canceling")
        return {"subscription": obj["id"], "event": "customer.subscription.updated"}
    if action not in ("trial_converted", "subscription_upgraded", "subscription_downgraded",
                      "customer_churned"):
        return None
    if sub is None:
        raise ValueError("this customer has no live subscription")
    if action == "customer_churned":
        live = [s for s in subs if s["status"] not in ("canceled", "incomplete_expired")]
        for one in live:
            state.cancel_subscription(account, one["id"])
        return {"subscription": sub["id"], "event": "customer.subscription.deleted"}
    if action == "trial_converted":
        if sub["status"] != "trialing":
            raise ValueError("the subscription is not trialing")
        now = int(time.time())
        obj = state.update_subscription(account, sub["id"], status="active", trial_end=now)
        return {"subscription": obj["id"], "event": "customer.subscription.updated"}
    current = price or {}
    unit = int(current.get("unit_amount") or 2900)
    unit = amount or (unit * 2 if action == "subscription_upgraded" else max(1, unit // 2))
    recurring = current.get("recurring") or {}
    new_price = state.create_price(
        account, unit, current.get("currency", "usd"),
        interval=recurring.get("interval", "month"),
        interval_count=recurring.get("interval_count", 1),
        product_name="Plus" if action == "subscription_upgraded" else "Lite")
    obj = state.update_subscription(account, sub["id"], price=new_price["id"])
    return {"subscription": obj["id"], "event": "customer.subscription.updated"}


def handle(double: StripeDouble, request: Request, endpoint: str, args: dict) -> Response:
    if endpoint == "control_api":
        return _api(double, request, args["name"])
    message = ""
    if endpoint == "control_action":
        form = request.form
        try:
            if form.get("do") == "seed":
                account = form.get("account") or double.create_account()
                counts = double.seed(account, int(form.get("customers") or 100),
                                     int(form.get("seed") or 0))
                summary = ", ".join(f"{n} {k}" for k, n in counts.items()) \
                    if isinstance(counts, dict) else str(counts)
                message = f"<p class=ok>Seeded {escape(account)}: {escape(summary)}.</p>"
            elif form.get("do") == "resend":
                double.webhooks.resend(form["event_id"])
                message = f"<p class=ok>Resent {escape(form['event_id'])}</p>"
            else:
                result = simulate(double, form.get("account", ""), form.get("action", ""),
                                  email=form.get("email") or None,
                                  customer=form.get("customer") or None,
                                  amount=int(form["amount"]) if form.get("amount") else None)
                message = f"<p class=ok>{escape(done_in_words(form, result))}</p>"
        except (LookupError, ValueError) as exc:
            message = f"<p class=err>{escape(error_in_words(exc))}</p>"
    return Response(_render(double, message, request.form if endpoint == "control_action"
                            else {}), mimetype="text/html")


def error_in_words(exc: Exception) -> str:
    """``LookupError("customer", "x@y")`` → "No customer x@y in this account."."""
    if isinstance(exc, LookupError) and len(exc.args) == 2:
        kind, wanted = exc.args
        return f"No {kind} {wanted or '(none given)'} in this account."
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def done_in_words(form, result: dict) -> str:
    """What a simulated action did, as a sentence."""
    who = form.get("email") or form.get("customer") or "the customer"
    objects = ", ".join(f"{k} {v}" for k, v in result.items() if k != "event" and v)
    event = result.get("event")
    return (f"Done: {ACTIONS.get(form.get('action', ''), form.get('action', ''))} for {who}"
            + (f" ({objects})" if objects else "")
            + (f"; Stripe event {event} sent." if event else "; no event is sent for this."))


def _api(double: StripeDouble, request: Request, name: str) -> Response:
    data = request.get_json(silent=True) or {}
    try:
        if name == "simulate":
            result: Any = simulate(double, data["account"], data["action"],
                                   data.get("customer"), data.get("email"), data.get("amount"))
        elif name == "seed":
            account = data.get("account") or double.create_account(
                livemode=bool(data.get("livemode")))
            result = {"account": account, **double.seed(account, int(data.get("customers", 100)),
                                                         int(data.get("seed", 0)))}
        elif name == "accounts":
            result = [{"id": a.id, "livemode": a.livemode, "connected": a.connected,
                       "customers": len(a.customers)} for a in double.state.accounts.values()]
        else:
            return Response(json.dumps({"error": f"unknown {name}"}), 404,
                            mimetype="application/json")
    except (KeyError, LookupError, ValueError) as exc:
        return Response(json.dumps({"error": str(exc)}), 400, mimetype="application/json")
    return Response(json.dumps(result), mimetype="application/json")


def _render(double: StripeDouble, message: str, form=None) -> str:
    form = form or {}
    accounts = [a for a in double.state.accounts.values() if a.id != "acct_platform"]
    rows = "".join(
        f"<tr><td><code>{escape(a.id)}</code></td><td>{'live' if a.livemode else 'test'}</td>"
        f"<td>{'connected' if a.connected else 'not connected'}</td><td>{len(a.customers)}</td>"
        f"<td>{len(a.subscriptions)}</td><td>{len(a.charges)}</td><td>{len(a.events)}</td></tr>"
        for a in accounts)
    def chosen(name: str, value: str) -> str:
        return " selected" if form.get(name) == value else ""

    acct_options = "".join(f'<option value="{escape(a.id)}"{chosen("account", a.id)}>'
                           f'{escape(a.id)} ({escape(a.email or "")})</option>'
                           for a in accounts)
    action_options = "".join(f'<option value="{k}"{chosen("action", k)}>{escape(v)}</option>'
                             for k, v in ACTIONS.items())
    kept = {k: escape(form.get(k) or "") for k in ("email", "customer", "amount")}
    samples = ""
    if accounts:
        first = accounts[0]
        emails = [c["email"] for c in first.customers.items[-8:] if c.get("email")]
        samples = "Recent customers: " + ", ".join(f"<code>{escape(e)}</code>" for e in emails)
    deliveries = "".join(
        f"<tr><td>{time.strftime('%H:%M:%S', time.localtime(d['at']))}</td>"
        f"<td><code>{escape(d['type'])}</code></td><td><code>{escape(d['event_id'])}</code></td>"
        f"<td>{escape(d['account'] or '')}</td><td>{escape(d['status'] or d['error'] or '')}</td>"
        f"<td><form method=post action=/_double/action><input type=hidden name=do value=resend>"
        f"<input type=hidden name=event_id value=\"{escape(d['event_id'])}\">"
        f"<button class=secondary>Resend</button></form></td></tr>"
        for d in list(double.webhooks.deliveries)[-30:][::-1])
    body = f"""{message}
<div class=card><h2>Fire a billing event</h2>
<form method=post action=/_double/action><input type=hidden name=do value=simulate>
<select name=account>{acct_options}</select>
<input name=email placeholder="customer email" size=28 value="{kept['email']}">
<input name=customer placeholder="or cus_… id" size=18 value="{kept['customer']}">
<select name=action>{action_options}</select>
<input name=amount placeholder="amount (cents)" size=12 value="{kept['amount']}">
<button>Fire</button></form><p>{samples}</p></div>
<div class=card><h2>Accounts</h2><table><tr><th>account</th><th>mode</th><th>platform</th>
<th>customers</th><th>subscriptions</th><th>charges</th><th>events</th></tr>{rows}</table>
<form method=post action=/_double/action><input type=hidden name=do value=seed>
<select name=account><option value="">new account</option>{acct_options}</select>
<input name=customers value=100 size=6> customers, seed <input name=seed value=1 size=4>
<button>Seed</button></form></div>
<div class=card><h2>Webhook deliveries</h2><p>Endpoint: <code>{escape(double.webhooks.url or
"(none: events are recorded, not sent)")}</code></p>
<table><tr><th>at</th><th>type</th><th>event</th><th>account</th><th>result</th><th></th></tr>
{deliveries}</table></div>"""
    return page("Stripe double", body)
