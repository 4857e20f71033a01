"""The double's state: accounts, each with its own customers, prices, subscriptions…

Every change goes through a method here that also emits the Stripe event for it
(what Stripe would send to a Connect webhook endpoint). Objects live in
``Collection``s kept in creation order with an id index, so Stripe's newest-first
cursor pagination is a walk down a list and ``customer=`` filters use a per-customer
index: 100k customers with their subscriptions and charges page in microseconds.
"""

from __future__ import annotations

import bisect
import copy
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from crowdpower.plugins.stripe.mapping import item_amount

from crowdpower_stripe_double import objects as O  # noqa: N812

SECONDS = {"day": 86400, "week": 7 * 86400, "month": 30 * 86400, "year": 365 * 86400}


class Collection:
    """Objects of one kind, oldest ``created`` first; ids indexed; an index by owner.

    The owner index (``by_customer``) is keyed by ``owner`` (the customer, or for
    refunds the charge). Objects usually arrive in ``created`` order and are appended;
    one created "in the past" is inserted in place (and the indexes rebuilt), so lists
    stay newest first by ``created`` as Stripe's do. ``extend`` adds many at once.
    """

    def __init__(self, owner: str = "customer") -> None:
        self.owner = owner
        self.items: list[dict] = []
        self.index: dict[str, int] = {}
        self.by_customer: dict[str, list[int]] = defaultdict(list)

    def add(self, core: dict) -> dict:
        created = core.get("created") or 0
        if self.items and created < (self.items[-1].get("created") or 0):
            pos = bisect.bisect_right(self.items, created,
                                      key=lambda c: c.get("created") or 0)
            self.items.insert(pos, core)
            self._reindex()
            return core
        pos = len(self.items)
        self.index[core["id"]] = pos
        self.items.append(core)
        if core.get(self.owner):
            self.by_customer[core[self.owner]].append(pos)
        return core

    def extend(self, cores: list[dict]) -> None:
        """Add many objects (seeding): one stable sort and one reindex, not one per object."""
        if not cores:
            return
        cores = sorted(cores, key=lambda c: c.get("created") or 0)
        if self.items and (cores[0].get("created") or 0) < (self.items[-1].get("created") or 0):
            self.items.extend(cores)
            self.items.sort(key=lambda c: c.get("created") or 0)
            self._reindex()
            return
        owner, index, by_owner = self.owner, self.index, self.by_customer
        for pos, core in enumerate(cores, start=len(self.items)):
            index[core["id"]] = pos
            if core.get(owner):
                by_owner[core[owner]].append(pos)
        self.items.extend(cores)

    def _reindex(self) -> None:
        self.index = {c["id"]: p for p, c in enumerate(self.items)}
        self.by_customer = defaultdict(list)
        for p, c in enumerate(self.items):
            if c.get(self.owner):
                self.by_customer[c[self.owner]].append(p)

    def get(self, obj_id: str) -> dict | None:
        pos = self.index.get(obj_id)
        return None if pos is None else self.items[pos]

    def __len__(self) -> int:
        return len(self.items)

    def page(self, keep: Callable[[dict], bool], limit: int, starting_after: str | None = None,
             ending_before: str | None = None, customer: str | None = None
             ) -> tuple[list[dict], bool]:
        """One page newest first, like Stripe: ``(cores, has_more)``.

        Unknown cursors raise ``KeyError`` (the server answers ``resource_missing``).
        """
        positions: list[int] | range
        positions = self.by_customer.get(customer, []) if customer else range(len(self.items))
        if ending_before:
            pivot = self.index[ending_before]
            found: list[dict] = []
            older_first = [p for p in positions if p > pivot] if customer else \
                range(pivot + 1, len(self.items))
            for p in older_first:
                core = self.items[p]
                if keep(core):
                    found.append(core)
                    if len(found) > limit:
                        break
            has_more = len(found) > limit
            return list(reversed(found[:limit])), has_more
        if starting_after:
            pivot = self.index[starting_after]
            walk: Iterator[int] = (p for p in reversed(positions) if p < pivot) if customer \
                else iter(range(pivot - 1, -1, -1))
        else:
            walk = iter(reversed(positions))
        out: list[dict] = []
        for p in walk:
            core = self.items[p]
            if keep(core):
                if len(out) == limit:
                    return out, True
                out.append(core)
        return out, False


class Account:
    """One Stripe account (a connected account of the platform)."""

    def __init__(self, account_id: str, livemode: bool, email: str | None, name: str | None):
        self.id, self.livemode, self.email, self.name = account_id, livemode, email, name
        self.created = int(time.time())
        self.connected = True  # to the platform (revoked by deauthorize)
        self.customers = Collection()
        self.products = Collection()
        self.prices = Collection()
        self.subscriptions = Collection()
        self.charges = Collection()
        self.refunds = Collection(owner="charge")
        self.disputes = Collection(owner="charge")
        self.coupons: dict[str, dict] = {}
        self.events = Collection()

    def collection(self, kind: str) -> Collection:
        return {"customer": self.customers, "product": self.products, "price": self.prices,
                "subscription": self.subscriptions, "charge": self.charges,
                "refund": self.refunds, "dispute": self.disputes,
                "event": self.events}[kind]

    # -- rendering ------------------------------------------------------------------
    def render(self, kind: str, core: dict, expand: set[str] | frozenset = frozenset()) -> dict:
        if kind == "customer":
            out = O.customer(core)
        elif kind == "product":
            out = O.product(core)
        elif kind == "price":
            out = O.price(core, _ProductView(self),  # type: ignore[arg-type]
                          "product" in expand or "data.product" in expand,
                          include_tiers="tiers" in expand or "data.tiers" in expand)
        elif kind == "subscription":
            deep = any(e.endswith("items.data.price.product") for e in expand)
            whole = any(e.endswith("discounts") or "discounts." in e for e in expand)
            coupon = any(e.endswith("discounts.source.coupon") for e in expand)
            discounts = [O.discount(d, self.coupons, coupon) if whole else d["id"]
                         for d in core.get("discounts") or []]
            out = O.subscription(core, _PriceView(self), _ProductView(self), deep, discounts)
        elif kind == "charge":
            out = O.charge(core, self.refunds_of(core["id"]))
        elif kind == "refund":
            out = O.refund(core)
        elif kind == "dispute":
            charge = self.charges.get(core["charge"])
            expanded = "charge" in expand or "data.charge" in expand
            out = O.dispute(core, O.charge(charge, self.refunds_of(charge["id"]))
                            if expanded and charge else None)
        elif kind == "event":
            return core["body"]
        else:  # pragma: no cover
            raise ValueError(kind)
        if ("customer" in expand or "data.customer" in expand) and isinstance(
                out.get("customer"), str):
            cus = self.customers.get(out["customer"])
            if cus is not None:
                out["customer"] = O.customer(cus)
        return out

    def refunds_of(self, charge_id: str) -> list[dict]:
        return [self.refunds.items[p] for p in self.refunds.by_customer.get(charge_id, [])]

    def account_object(self) -> dict:
        return O.account({"id": self.id, "object": "account", "email": self.email,
                          "business_profile": {**O.ACCOUNT.get("business_profile", {}),
                                               "name": self.name},
                          "charges_enabled": True, "payouts_enabled": True,
                          "created": self.created, "type": "standard"})


class _PriceView:
    """``prices[id]`` over an account's price collection (for rendering)."""

    def __init__(self, account: Account) -> None:
        self.c = account.prices

    def get(self, key: str, default: Any = None) -> Any:
        found = self.c.get(key)
        return default if found is None else found

    def __contains__(self, key: str) -> bool:
        return key in self.c.index

    def __getitem__(self, key: str) -> dict:
        return self.c.items[self.c.index[key]]


class _ProductView(_PriceView):
    def __init__(self, account: Account) -> None:
        self.c = account.products


class State:
    """All accounts, plus the mutations that emit events (``emit`` is the webhook sink)."""

    def __init__(self, emit: Callable[[Account, dict], None]) -> None:
        self.lock = threading.RLock()
        self.accounts: dict[str, Account] = {}
        self._emit = emit
        self._seq = 0

    # -- accounts -------------------------------------------------------------------
    def create_account(self, livemode: bool = False, email: str | None = None,
                       name: str | None = None, account_id: str | None = None) -> str:
        with self.lock:
            account_id = account_id or O.new_id("acct", 16)
            self.accounts[account_id] = Account(account_id, livemode, email, name)
            return account_id

    def account(self, account_id: str) -> Account:
        try:
            return self.accounts[account_id]
        except KeyError:
            raise KeyError(f"no such account {account_id!r} in the Stripe double") from None

    # -- events ---------------------------------------------------------------------
    def emit(self, account_id: str, type_: str, obj: dict,
             previous_attributes: dict | None = None, livemode: bool | None = None,
             created: int | None = None) -> dict:
        """Record an event on the account and hand it to webhook delivery."""
        with self.lock:
            acct = self.account(account_id)
            body = O.event(O.new_id("evt"), type_, obj, created or int(time.time()),
                           acct.livemode if livemode is None else livemode, acct.id,
                           previous_attributes)
            acct.events.add({"id": body["id"], "created": body["created"], "type": type_,
                             "body": body})
        self._emit(acct, body)
        return body

    def _now(self, created: int | None) -> int:
        return int(created if created is not None else time.time())

    # -- customers ------------------------------------------------------------------
    def create_customer(self, account_id: str, email: str | None = None,
                        name: str | None = None, created: int | None = None,
                        metadata: dict | None = None, currency: str | None = None,
                        emit: bool = True, customer_id: str | None = None,
                        livemode: bool | None = None) -> dict:
        """``livemode=False`` on a live account: a test-mode customer (its own data set,
        which a live key cannot read)."""
        with self.lock:
            acct = self.account(account_id)
            core = {"id": customer_id or O.new_id("cus", 14), "object": "customer",
                    "email": email, "name": name, "created": self._now(created),
                    "livemode": acct.livemode if livemode is None else livemode, "metadata": dict(metadata or {}),
                    "currency": currency, "delinquent": False,
                    "invoice_prefix": O.new_id("x", 8)[2:].upper()}
            acct.customers.add(core)
            obj = acct.render("customer", core)
        if emit:
            self.emit(account_id, "customer.created", obj, livemode=core["livemode"])
        return obj

    def update_customer(self, account_id: str, customer_id: str, **changes: Any) -> dict:
        with self.lock:
            acct = self.account(account_id)
            core = self._get(acct, "customer", customer_id)
            previous = {k: copy.deepcopy(core.get(k)) for k in changes if core.get(k) != changes[k]}
            core.update(changes)
            obj = acct.render("customer", core)
        if previous:
            self.emit(account_id, "customer.updated", obj, previous)
        return obj

    def delete_customer(self, account_id: str, customer_id: str) -> dict:
        """Delete like Stripe: the customer's live subscriptions are canceled first."""
        with self.lock:
            acct = self.account(account_id)
            core = self._get(acct, "customer", customer_id)
            subs = [acct.subscriptions.items[p] for p in
                    acct.subscriptions.by_customer.get(customer_id, [])]
        for sub in subs:
            if sub["status"] not in ("canceled", "incomplete_expired"):
                self.cancel_subscription(account_id, sub["id"])
        with self.lock:
            before = acct.render("customer", core)
            core["deleted"] = True
        self.emit(account_id, "customer.deleted", before)
        return {"id": customer_id, "object": "customer", "deleted": True}

    def _get(self, acct: Account, kind: str, obj_id: str) -> dict:
        core = acct.collection(kind).get(obj_id)
        if core is None or (kind == "customer" and core.get("deleted")):
            raise LookupError(kind, obj_id)
        return core

    # -- catalogue ------------------------------------------------------------------
    def create_product(self, account_id: str, name: str, created: int | None = None) -> dict:
        with self.lock:
            acct = self.account(account_id)
            now = self._now(created)
            core = {"id": O.new_id("prod", 14), "object": "product", "name": name,
                    "created": now, "updated": now, "livemode": acct.livemode, "active": True}
            acct.products.add(core)
            return acct.render("product", core)

    def create_price(self, account_id: str, unit_amount: int | None, currency: str = "usd",
                     interval: str = "month", interval_count: int = 1,
                     product: str | None = None, product_name: str | None = None,
                     nickname: str | None = None, created: int | None = None,
                     unit_amount_decimal: str | None = None, usage_type: str = "licensed",
                     tiers: list[dict] | None = None, tiers_mode: str | None = None,
                     transform_quantity: dict | None = None) -> dict:
        """A recurring price: per unit (``unit_amount`` or a fractional
        ``unit_amount_decimal``), or ``tiers`` (``tiers_mode`` volume/graduated; then
        ``unit_amount`` is null, as Stripe's); ``usage_type`` licensed or metered."""
        with self.lock:
            acct = self.account(account_id)
            if product is None:
                product = self.create_product(account_id, product_name or "Plan")["id"]
            core = {"id": O.new_id("price", 24), "object": "price", "product": product,
                    "unit_amount": None if unit_amount is None or tiers else int(unit_amount),
                    "currency": currency.lower(),
                    "nickname": nickname, "created": self._now(created),
                    "livemode": acct.livemode, "active": True, "type": "recurring",
                    "recurring": {"interval": interval, "interval_count": interval_count,
                                  "meter": None, "usage_type": usage_type,
                                  "trial_period_days": None}}
            if unit_amount_decimal is not None:
                core["unit_amount_decimal"] = unit_amount_decimal
                core["unit_amount"] = int(float(unit_amount_decimal)) \
                    if float(unit_amount_decimal).is_integer() else None
            if tiers:
                core.update(billing_scheme="tiered", tiers_mode=tiers_mode or "volume",
                            unit_amount_decimal=None,
                            tiers=[{"flat_amount": None, "flat_amount_decimal": None,
                                    "unit_amount": None, "unit_amount_decimal": None,
                                    "up_to": None, **t} for t in tiers])
                for t in core["tiers"]:
                    for field in ("flat_amount", "unit_amount"):
                        if t[field] is not None and t[f"{field}_decimal"] is None:
                            t[f"{field}_decimal"] = str(t[field])
            if transform_quantity:
                core["transform_quantity"] = dict(transform_quantity)
            acct.prices.add(core)
            return acct.render("price", core)

    def create_coupon(self, account_id: str, percent_off: float | None = None,
                      amount_off: int | None = None, currency: str | None = None,
                      duration: str = "forever", name: str | None = None) -> dict:
        with self.lock:
            acct = self.account(account_id)
            core = {"id": O.new_id("co", 8), "percent_off": percent_off,
                    "amount_off": amount_off, "currency": currency, "duration": duration,
                    "name": name, "created": self._now(None), "livemode": acct.livemode,
                    "duration_in_months": 3 if duration == "repeating" else None}
            acct.coupons[core["id"]] = core
            return O.coupon(core)

    # -- subscriptions --------------------------------------------------------------
    def _period(self, acct: Account, price_id: str) -> int:
        price = acct.prices.get(price_id) or {}
        rec = price.get("recurring") or {}
        return SECONDS.get(rec.get("interval", "month"), SECONDS["month"]) * int(
            rec.get("interval_count") or 1)

    def create_subscription(self, account_id: str, customer: str, price: str,
                            quantity: int = 1, status: str | None = None,
                            trial_days: int | None = None, created: int | None = None,
                            cancel_at_period_end: bool = False, emit: bool = True,
                            period_start: int | None = None,
                            more_items: list[tuple[str, int]] | None = None,
                            coupons: list[str] | None = None) -> dict:
        """``more_items``: further ``(price, quantity)`` items; ``coupons``: coupon ids
        (from ``create_coupon``) applied as the subscription's discounts."""
        with self.lock:
            acct = self.account(account_id)
            self._get(acct, "customer", customer)
            if acct.prices.get(price) is None:
                raise LookupError("price", price)
            now = self._now(created)
            period = self._period(acct, price)
            status = status or ("trialing" if trial_days else "active")
            trial_end = now + trial_days * 86400 if trial_days else None
            start = period_start if period_start is not None else now
            end = trial_end if status == "trialing" and trial_end else start + period
            core = {"id": O.new_id("sub", 24), "object": "subscription", "customer": customer,
                    "status": status, "created": now, "start_date": now,
                    "billing_cycle_anchor": end if trial_end else now,
                    "currency": acct.prices.get(price)["currency"], "livemode": acct.livemode,
                    "trial_start": now if trial_end else None, "trial_end": trial_end,
                    "cancel_at_period_end": cancel_at_period_end,
                    "cancel_at": end if cancel_at_period_end else None,
                    "canceled_at": None, "ended_at": None,
                    "items": [{"id": O.new_id("si", 14), "price": p, "quantity": q,
                               "created": now, "current_period_start": start,
                               "current_period_end": end}
                              for p, q in [(price, quantity), *(more_items or [])]]}
            for p, _q in more_items or []:
                if acct.prices.get(p) is None:
                    raise LookupError("price", p)
            if coupons:
                core["discounts"] = [{"id": O.new_id("di", 24), "coupon": c,
                                      "customer": customer, "subscription": core["id"],
                                      "start": now, "end": None} for c in coupons]
            if status in ("canceled", "incomplete_expired"):
                core["canceled_at"] = core["ended_at"] = min(end, int(time.time()))
            acct.subscriptions.add(core)
            obj = acct.render("subscription", core)
        if emit:
            self.emit(account_id, "customer.subscription.created", obj)
        return obj

    def update_subscription(self, account_id: str, subscription_id: str,
                            price: str | None = None, quantity: int | None = None,
                            **changes: Any) -> dict:
        """Change fields (status, cancel_at_period_end, trial_end…) or the price/quantity.

        Emits ``customer.subscription.updated`` with ``previous_attributes``, or
        ``customer.subscription.deleted`` when the status becomes ``canceled``.
        """
        with self.lock:
            acct = self.account(account_id)
            core = self._get(acct, "subscription", subscription_id)
            if price is not None and acct.prices.get(price) is None:
                raise LookupError("price", price)  # before anything changes
            before = acct.render("subscription", core)
            if changes.get("cancel_at_period_end") is True:
                changes.setdefault("cancel_at", core["items"][0]["current_period_end"])
            elif changes.get("cancel_at_period_end") is False:
                changes.setdefault("cancel_at", None)
            if changes.get("status") == "canceled":
                changes.setdefault("canceled_at", int(time.time()))
                changes.setdefault("ended_at", int(time.time()))
            core.update(changes)
            if price is not None or quantity is not None:
                item = dict(core["items"][0])
                if price is not None:
                    item["price"] = price
                    core["currency"] = acct.prices.get(price)["currency"]
                if quantity is not None:
                    item["quantity"] = quantity
                core["items"] = [item] + core["items"][1:]
            after = acct.render("subscription", core)
            previous = {k: v for k, v in before.items() if after.get(k) != v}
        if previous and after["status"] == "canceled" != before["status"]:
            # Stripe announces a subscription's end as ``deleted``, never as an update.
            self.emit(account_id, "customer.subscription.deleted", after)
        elif previous:
            self.emit(account_id, "customer.subscription.updated", after, previous)
        return after

    def cancel_subscription(self, account_id: str, subscription_id: str,
                            at_period_end: bool = False) -> dict:
        if at_period_end:
            return self.update_subscription(account_id, subscription_id,
                                            cancel_at_period_end=True)
        with self.lock:
            acct = self.account(account_id)
            core = self._get(acct, "subscription", subscription_id)
            if core["status"] in ("canceled", "incomplete_expired"):
                raise ValueError(f"Subscription {subscription_id} has already ended.")
            now = int(time.time())
            core.update(status="canceled", canceled_at=now, ended_at=now,
                        cancellation_details={"comment": None, "feedback": None,
                                              "reason": "cancellation_requested"})
            obj = acct.render("subscription", core)
        self.emit(account_id, "customer.subscription.deleted", obj)
        return obj

    def trial_will_end(self, account_id: str, subscription_id: str) -> dict:
        """Stripe sends this three days before a trial ends."""
        with self.lock:
            acct = self.account(account_id)
            obj = acct.render("subscription", self._get(acct, "subscription", subscription_id))
        return self.emit(account_id, "customer.subscription.trial_will_end", obj)

    def invoice_upcoming(self, account_id: str, subscription_id: str) -> dict:
        """Stripe sends this some days before a subscription renews."""
        with self.lock:
            acct = self.account(account_id)
            core = self._get(acct, "subscription", subscription_id)
            sub = acct.render("subscription", core)
            lines = []
            for item, rendered in zip(core["items"], sub["items"]["data"], strict=True):
                price = acct.prices.get(item["price"]) or {}
                full = O.price(price, include_tiers=True)
                start = item["current_period_end"]
                lines.append((round(item_amount({**rendered, "price": full})), item["id"],
                              start, start + self._period(acct, item["price"])))
            first = core["items"][0]
            cus = acct.customers.get(core["customer"]) or {}
            invoice = O.upcoming_invoice(sub, lines, first["current_period_start"],
                                         first["current_period_end"], int(time.time()),
                                         cus.get("email"))
        return self.emit(account_id, "invoice.upcoming", invoice)

    # -- charges --------------------------------------------------------------------
    def create_charge(self, account_id: str, customer: str | None, amount: int,
                      currency: str = "usd", status: str = "succeeded",
                      failure_code: str | None = None, failure_message: str | None = None,
                      created: int | None = None, description: str | None = None,
                      emit: bool = True, captured: bool = True,
                      billing_email: str | None = None, livemode: bool | None = None) -> dict:
        """A charge; ``captured=False`` authorises only (capture later with
        ``capture_charge``); without ``customer`` it is a guest's (``billing_email``)."""
        if status not in ("succeeded", "failed", "pending"):
            raise ValueError(f"charge status {status!r}")
        with self.lock:
            acct = self.account(account_id)
            cus = self._get(acct, "customer", customer) if customer else None
            if status == "failed":
                failure_code = failure_code or "card_declined"
                failure_message = failure_message or "Your card was declined."
            core = {"id": O.new_id("ch", 24), "object": "charge", "customer": customer,
                    "amount": int(amount), "amount_refunded": 0, "currency": currency.lower(),
                    "status": status, "refunded": False, "created": self._now(created),
                    "livemode": acct.livemode, "failure_code": failure_code,
                    "failure_message": failure_message, "description": description,
                    "receipt_email": (cus or {}).get("email"),
                    "billing_name": (cus or {}).get("name"),
                    "balance_transaction": None if status == "failed" else O.new_id("txn", 24)}
            if not captured:
                core.update(captured=False, amount_captured=0)
            if livemode is not None:
                core["livemode"] = livemode
            if billing_email:
                core["billing_email"] = billing_email
            acct.charges.add(core)
            obj = acct.render("charge", core)
        if emit and status != "pending":
            self.emit(account_id, f"charge.{status}", obj, livemode=core["livemode"])
        return obj

    def refund_charge(self, account_id: str, charge_id: str, amount: int | None = None,
                      emit: bool = True, created: int | None = None) -> dict:
        """Refund all (default) or part of a charge; emits ``charge.refunded``."""
        with self.lock:
            acct = self.account(account_id)
            core = self._get(acct, "charge", charge_id)
            if core["status"] != "succeeded":
                raise ValueError("only a succeeded charge can be refunded")
            left = core["amount"] - core["amount_refunded"]
            amount = left if amount is None else int(amount)
            if amount <= 0 or amount > left:
                raise ValueError(f"refund amount must be 1..{left}")
            before = acct.render("charge", core)
            refund = {"id": O.new_id("re", 24), "object": "refund", "amount": amount,
                      "charge": charge_id, "currency": core["currency"],
                      "created": self._now(created), "status": "succeeded",
                      "customer": core.get("customer")}
            acct.refunds.add(refund)
            core["amount_refunded"] += amount
            core["refunded"] = core["amount_refunded"] >= core["amount"]
            after = acct.render("charge", core)
            previous = {k: before[k] for k in ("amount_refunded", "refunded", "refunds")
                        if before[k] != after[k]}
        if emit:
            self.emit(account_id, "charge.refunded", after, previous)
        return after

    def capture_charge(self, account_id: str, charge_id: str, amount: int | None = None,
                       emit: bool = True) -> dict:
        """Capture an uncaptured charge, all or part; the rest is released as a refund."""
        with self.lock:
            acct = self.account(account_id)
            core = self._get(acct, "charge", charge_id)
            if core.get("captured", True):
                raise ValueError(f"Charge {charge_id} has already been captured.")
            amount = core["amount"] if amount is None else int(amount)
            core["captured"], core["amount_captured"] = True, amount
            if amount < core["amount"]:
                rest = core["amount"] - amount
                acct.refunds.add({"id": O.new_id("re", 24), "object": "refund", "amount": rest,
                                  "charge": charge_id, "currency": core["currency"],
                                  "created": self._now(None), "status": "succeeded",
                                  "customer": core.get("customer")})
                core["amount_refunded"] += rest
            obj = acct.render("charge", core)
        if emit:
            self.emit(account_id, "charge.captured", obj)
        return obj

    def dispute_charge(self, account_id: str, charge_id: str, status: str = "needs_response",
                       emit: bool = True, created: int | None = None) -> dict:
        """Open (or settle: ``status`` won/lost) a dispute of a whole charge."""
        with self.lock:
            acct = self.account(account_id)
            core = self._get(acct, "charge", charge_id)
            found = [acct.disputes.items[p] for p in acct.disputes.by_customer.get(charge_id, [])]
            if found:
                found[0]["status"] = status
                dispute = found[0]
            else:
                dispute = {"id": O.new_id("dp", 24), "object": "dispute", "charge": charge_id,
                           "amount": core.get("amount_captured", core["amount"]), "currency": core["currency"],
                           "status": status, "created": self._now(created),
                           "livemode": acct.livemode}
                acct.disputes.add(dispute)
            core["disputed"] = True
            obj = acct.render("dispute", dispute)
        if emit:
            closed = status in ("won", "lost", "warning_closed")
            self.emit(account_id, "charge.dispute.closed" if closed
                      else "charge.dispute.created", obj)
        return obj

    # -- connect --------------------------------------------------------------------
    def deauthorize(self, account_id: str, client_id: str) -> dict:
        with self.lock:
            acct = self.account(account_id)
            acct.connected = False
        return self.emit(account_id, "account.application.deauthorized",
                         {"id": client_id, "object": "application", "name": "CrowdPower"})
