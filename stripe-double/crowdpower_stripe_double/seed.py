"""Realistic sample data for an account, generated fast (100k customers in seconds).

Mixed plans, intervals and currencies (JPY and BHD among them); trials, cancellations,
past-due and paused subscriptions, some with a metered second item; succeeded, failed,
uncaptured, disputed (won/lost), fully and partially refunded charges; customers
without email and several customers sharing one email (in another case). The data is
a pure function of ``seed`` (two accounts seeded alike hold the same data under
different ids). Seeding is history: it emits no webhook events.
"""

from __future__ import annotations

import gc
import random
import time

from crowdpower_stripe_double.state import SECONDS, Account, State

PLANS = [  # (product, nickname, unit_amount, currency, interval, interval_count, weight)
    ("Starter", "Starter monthly", 900, "usd", "month", 1, 30),
    ("Pro", "Pro monthly", 2900, "usd", "month", 1, 30),
    ("Pro", "Pro annual", 29000, "usd", "year", 1, 12),
    ("Team", "Team monthly", 9900, "eur", "month", 1, 12),
    ("Business", "Business quarterly", 12900, "gbp", "month", 3, 8),
    ("Starter", "Starter weekly", 300, "usd", "week", 1, 3),
    ("Pro", "Pro JP monthly", 3000, "jpy", "month", 1, 2),       # zero-decimal
    ("Team", "Team BH quarterly", 29500, "bhd", "month", 3, 1),  # three-decimal
]
STATUSES = [("active", 58), ("trialing", 8), ("past_due", 6), ("canceled", 18), ("unpaid", 2),
            ("incomplete", 3), ("incomplete_expired", 1), ("paused", 4)]
FAILURES = [("card_declined", "Your card was declined."),
            ("insufficient_funds", "Your card has insufficient funds."),
            ("expired_card", "Your card has expired."),
            ("incorrect_cvc", "Your card's security code is incorrect.")]
FIRST = ["Ann", "Ben", "Chloé", "Dev", "Eve", "Femi", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lea",
         "Mo", "Nia", "Oskar", "Pia", "Quinn", "Ravi", "Sam", "Tess", "Uma", "Vik", "Wen", "Yara"]
LAST = ["Smith", "García", "Nguyen", "Okafor", "Kowalski", "Müller", "Rossi", "Tanaka", "Silva",
        "Dubois", "Khan", "Larsen", "Novak", "Park", "Walsh", "Cohen"]
DOMAINS = ["example.com", "mail.test", "acme.test", "shop.test", "inbox.test"]


def _weighted(rng: random.Random, pairs: list) -> object:
    return rng.choices([p[0] for p in pairs], weights=[p[-1] for p in pairs])[0]


def seed_account(state: State, account_id: str, customers: int = 100, seed: int = 0,
                 now: int | None = None) -> dict[str, int]:
    """Add ``customers`` customers with subscriptions and charges; returns counts."""
    rng = random.Random(seed)
    ids = random.Random(f"{seed}:{account_id}")
    now = int(now or time.time())
    # Hundreds of thousands of small acyclic dicts: the cycle collector would only rescan
    # them over and over (about a quarter of the time at 100k customers).
    collecting = gc.isenabled()
    gc.disable()
    try:
        with state.lock:
            acct = state.account(account_id)
            return _seed(acct, rng, ids, customers, now)
    finally:
        if collecting:
            gc.enable()


def _id(ids: random.Random, prefix: str) -> str:
    return f"{prefix}_{ids.getrandbits(96):024x}"


def _seed(acct: Account, rng: random.Random, ids: random.Random, n: int,
          now: int) -> dict[str, int]:
    live = acct.livemode
    catalogue = []
    products: dict[str, str] = {}
    start = now - 800 * 86400
    # Usage-based add-on, the second item of some subscriptions (no recurring revenue).
    metered_id = _id(ids, "price")
    products["API calls"] = _id(ids, "prod")
    acct.products.add({"id": products["API calls"], "object": "product", "name": "API calls",
                       "created": start, "updated": start, "livemode": live, "active": True})
    acct.prices.add({"id": metered_id, "object": "price", "product": products["API calls"],
                     "unit_amount": 2, "currency": "usd", "nickname": "API calls (metered)",
                     "created": start, "livemode": live, "active": True, "type": "recurring",
                     "recurring": {"interval": "month", "interval_count": 1, "meter": None,
                                   "usage_type": "metered", "trial_period_days": None}})
    for name, nickname, amount, currency, interval, count, weight in PLANS:
        if name not in products:
            products[name] = _id(ids, "prod")
            acct.products.add({"id": products[name], "object": "product", "name": name,
                               "created": start, "updated": start, "livemode": live,
                               "active": True})
        price_id = _id(ids, "price")
        acct.prices.add({"id": price_id, "object": "price", "product": products[name],
                         "unit_amount": amount, "currency": currency, "nickname": nickname,
                         "created": start, "livemode": live, "active": True,
                         "type": "recurring",
                         "recurring": {"interval": interval, "interval_count": count,
                                       "meter": None, "usage_type": "licensed",
                                       "trial_period_days": None}})
        catalogue.append((price_id, amount, currency, SECONDS[interval] * count, weight))

    # Customers, oldest first; some recent (the "New Stripe Customers" segment).
    created = sorted(now - (rng.randint(0, 29 * 86400) if rng.random() < 0.08
                            else rng.randint(30 * 86400, 730 * 86400)) for _ in range(n))
    emails: list[str] = []
    custs: list[dict] = []
    subs: list[dict] = []
    charges: list[dict] = []
    refunds: list[dict] = []
    disputes: list[dict] = []
    for ts in created:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        roll = rng.random()
        if roll < 0.08:
            email = None
        elif roll < 0.11 and emails:
            email = rng.choice(emails).upper()  # the same person, another Stripe customer
        else:
            email = f"{first.lower()}.{last.lower()}{rng.randint(1, 99999)}@{rng.choice(DOMAINS)}"
            email = email.encode("ascii", "ignore").decode()
            emails.append(email)
        cus_id = _id(ids, "cus")
        custs.append({"id": cus_id, "object": "customer", "email": email,
                      "name": f"{first} {last}" if rng.random() < 0.9 else None,
                      "created": ts, "livemode": live, "metadata": {},
                      "currency": None, "delinquent": False,
                      "invoice_prefix": f"{ids.getrandbits(32):08X}"})
        nsubs = _weighted(rng, [(0, 15), (1, 60), (2, 20), (3, 5)])
        currency = "usd"
        for _ in range(nsubs):  # type: ignore[call-overload]
            price_id, amount, currency, period, _w = rng.choices(
                catalogue, weights=[c[-1] for c in catalogue])[0]
            sub_created = rng.randint(ts, max(ts, now - 3600))
            status = _weighted(rng, STATUSES)
            elapsed = max(0, now - sub_created)
            period_start = sub_created + (elapsed // period) * period
            trial_end = None
            if status == "trialing":
                sub_created = max(ts, now - rng.randint(0, 13) * 86400)
                trial_end = sub_created + 14 * 86400
                period_start = sub_created
            canceled_at = None
            if status in ("canceled", "incomplete_expired"):
                canceled_at = rng.randint(sub_created, now)
            cancel_at_period_end = status == "active" and rng.random() < 0.07
            period_end = trial_end or period_start + period
            items = [{"id": _id(ids, "si"), "price": price_id,
                      "quantity": 1 if rng.random() < 0.9 else rng.randint(2, 5),
                      "created": sub_created, "current_period_start": period_start,
                      "current_period_end": period_end}]
            if currency == "usd" and period == SECONDS["month"] and rng.random() < 0.1:
                items.append({"id": _id(ids, "si"), "price": metered_id, "created": sub_created,
                              "current_period_start": period_start,
                              "current_period_end": period_end})
            subs.append({"id": _id(ids, "sub"), "object": "subscription", "customer": cus_id,
                         "status": status, "created": sub_created, "start_date": sub_created,
                         "billing_cycle_anchor": period_start, "currency": currency,
                         "livemode": live, "trial_start": sub_created if trial_end else None,
                         "trial_end": trial_end, "cancel_at_period_end": cancel_at_period_end,
                         "cancel_at": period_end if cancel_at_period_end else None,
                         "canceled_at": canceled_at, "ended_at": canceled_at,
                         "items": items})
        ncharges = rng.randint(0, 10) if nsubs else rng.randint(0, 2)
        for _ in range(ncharges):
            amount = rng.choice([300, 900, 2900, 4900, 9900, 12900, 29000, 1999, 550])
            ch_created = rng.randint(ts, now)
            roll = rng.random()
            status = "failed" if roll < 0.10 else "succeeded"
            code, message = rng.choice(FAILURES) if status == "failed" else (None, None)
            ch_id = _id(ids, "ch")
            refunded = 0
            if status == "succeeded" and roll > 0.95:
                refunded = amount if rng.random() < 0.6 else rng.randint(1, amount - 1)
                refunds.append({"id": _id(ids, "re"), "object": "refund", "amount": refunded,
                                "charge": ch_id, "currency": currency,
                                "created": min(now, ch_created + 86400), "status": "succeeded",
                                "customer": cus_id})
            extra: dict = {}
            if status == "succeeded" and 0.10 <= roll < 0.12:
                extra = {"captured": False, "amount_captured": 0}  # authorised only
            elif status == "succeeded" and 0.12 <= roll < 0.13:
                extra = {"disputed": True}
                disputes.append({"id": _id(ids, "dp"), "object": "dispute", "charge": ch_id,
                                 "amount": amount, "currency": currency,
                                 "status": "lost" if rng.random() < 0.5 else "won",
                                 "created": min(now, ch_created + 7 * 86400),
                                 "livemode": live})
            charges.append({**extra, "id": ch_id, "object": "charge", "customer": cus_id,
                            "amount": amount, "amount_refunded": refunded, "currency": currency,
                            "status": status, "refunded": refunded == amount,
                            "created": ch_created, "livemode": live, "failure_code": code,
                            "failure_message": message, "description": None,
                            "receipt_email": email, "billing_name": None,
                            "balance_transaction": None if status == "failed"
                            else _id(ids, "txn")})
    # Added in bulk: an account that already holds newer objects stays newest first.
    acct.customers.extend(custs)
    acct.subscriptions.extend(subs)
    acct.charges.extend(charges)
    acct.refunds.extend(refunds)
    acct.disputes.extend(disputes)
    return {"customers": n, "subscriptions": len(subs), "charges": len(charges),
            "refunds": len(refunds), "disputes": len(disputes)}


def seed_cases(state: State, account_id: str, now: int | None = None) -> dict[str, str]:
    """One customer per awkward shape real accounts hold (issue 12), through the public
    state methods (so events, indexes and shapes are the double's ordinary ones).

    Returns ``{case: email}``. No webhook events are sent for history (``emit=False``)
    except where a state method has no such switch (discount coupons, captures).
    """
    now = int(now or time.time())
    day = 86400
    s = state
    pro = s.create_price(account_id, 2900, "usd", nickname="Pro monthly", created=now - 400 * day)
    metered = s.create_price(account_id, 5, "usd", product_name="API calls",
                             usage_type="metered", created=now - 400 * day)
    volume = s.create_price(account_id, None, "usd", product_name="Seats (volume)",
                            tiers_mode="volume", created=now - 400 * day,
                            tiers=[{"up_to": 5, "unit_amount": 1000},
                                   {"up_to": None, "unit_amount": 800}])
    graduated = s.create_price(account_id, None, "usd", product_name="Seats (graduated)",
                               tiers_mode="graduated", created=now - 400 * day,
                               tiers=[{"up_to": 5, "unit_amount": 1000, "flat_amount": 500},
                                      {"up_to": None, "unit_amount": 800}])
    decimal = s.create_price(account_id, None, "usd", product_name="Storage",
                             unit_amount_decimal="1234.5", created=now - 400 * day)
    packs = s.create_price(account_id, 1000, "usd", product_name="Packs of 10",
                           transform_quantity={"divide_by": 10, "round": "up"},
                           created=now - 400 * day)
    yen = s.create_price(account_id, 5000, "jpy", interval="year", product_name="Yen annual",
                         created=now - 400 * day)
    dinar = s.create_price(account_id, 12345, "bhd", interval="month", interval_count=3,
                           product_name="Dinar quarterly", created=now - 400 * day)
    quarter = s.create_coupon(account_id, percent_off=25, duration="forever", name="25% off")
    cases: dict[str, str] = {}

    def customer(case: str) -> str:
        email = f"{case}@cases.test"
        cases[case] = email
        return s.create_customer(account_id, email=email, name=case.title(),
                                 created=now - 300 * day, emit=False)["id"]

    def sub(cus: str, price: dict, quantity: int = 1, **kw) -> dict:
        return s.create_subscription(account_id, cus, price["id"], quantity,
                                     created=now - 200 * day, emit=False,
                                     period_start=now - 10 * day, **kw)

    sub(customer("multi"), pro, more_items=[(metered["id"], 1)])
    sub(customer("volume"), volume, 10)
    sub(customer("graduated"), graduated, 7)
    sub(customer("decimal"), decimal, 2)
    sub(customer("packs"), packs, 25)
    yen_cus = customer("yen")
    sub(yen_cus, yen)
    s.create_charge(account_id, yen_cus, 5000, "jpy", created=now - 100 * day, emit=False)
    sub(customer("dinar"), dinar)
    sub(customer("discount"), pro, 2, coupons=[quarter["id"]])

    payer = customer("charges")
    kept = s.create_charge(account_id, payer, 10000, created=now - 90 * day, emit=False)
    s.refund_charge(account_id, kept["id"], 1000, emit=False, created=now - 89 * day)
    s.create_charge(account_id, payer, 5000, created=now - 80 * day, emit=False,
                    captured=False)  # authorised only
    partial = s.create_charge(account_id, payer, 8000, created=now - 70 * day, emit=False,
                              captured=False)
    s.capture_charge(account_id, partial["id"], 6000, emit=False)
    lost = s.create_charge(account_id, payer, 3000, created=now - 60 * day, emit=False)
    s.dispute_charge(account_id, lost["id"], "lost", emit=False, created=now - 50 * day)
    won = s.create_charge(account_id, payer, 2000, created=now - 40 * day, emit=False)
    s.dispute_charge(account_id, won["id"], "won", emit=False, created=now - 30 * day)

    gone = customer("deleted")
    sub(gone, pro)
    s.delete_customer(account_id, gone)
    s.create_charge(account_id, None, 4200, created=now - 20 * day, emit=False,
                    billing_email="guest@cases.test")  # a guest checkout: no customer
    return cases
