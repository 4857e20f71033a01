"""The demo's revenue story: six months of MRR history and a dunning that recovers money.

``seed_history`` writes daily totals and movements for the ~six months before today
(synthetic: the demo shop's customers only arrive with the sync), ending near the MRR
the seeded Stripe account really has, so the Revenue page has a curve from the start.
``RevenueStory`` waits for the tenant to connect and the sync to finish, then plays real
billing changes through the double (so through signed webhooks, derived events and
automations): failed payments that the dunning email precedes and a retry recovers, an
upgrade, a downgrade, a churn; then it takes today's snapshot.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import UTC, date, datetime, timedelta

from crowdpower.automations.models import Message
from crowdpower.extensions import db
from crowdpower.models import Customer
from crowdpower.plugins.stripe import mapping
from crowdpower.plugins.stripe.status import integration_status
from crowdpower.revenue.models import MrrDailyTotal, MrrMovement
from crowdpower.revenue.snapshot import take_snapshot
from crowdpower.tenancy import project_scope
from sqlalchemy import select

from crowdpower_stripe_double.control import simulate

log = logging.getLogger(__name__)


def account_mrr(double, account: str) -> dict[str, float]:
    """MRR per currency (major units) of a double's account, by ``mapping``'s rules."""
    acct = double.state.account(account)
    totals: dict[str, float] = {}
    with double.state.lock:
        subs = [acct.render("subscription", core) for core in acct.subscriptions.items]
    for sub in subs:
        currency = (sub.get("currency") or "usd").lower()
        totals[currency] = totals.get(currency, 0.0) + mapping.subscription_mrr(sub)
    return {c: mapping.to_major(round(v), c) or 0.0 for c, v in totals.items() if v > 0}


def seed_history(project_id: int, mrr: dict[str, float], days: int = 182,
                 today: date | None = None, seed: int = 7) -> int:
    """Daily totals and movements for ``days`` days before ``today``; returns rows written.

    No snapshot run is recorded for these days, so the first real snapshot is a baseline
    (its customers are not counted as "new" against a synthetic day).
    """
    rng = random.Random(seed)
    today = today or datetime.now(UTC).date()
    fake_customer = -1
    rows = 0
    for currency, end in mrr.items():
        value = end * 0.55
        growth = (end / value) ** (1 / days)
        previous = None
        for n in range(days, 0, -1):
            day = today - timedelta(days=n)
            value = value * growth * rng.uniform(0.995, 1.005) if previous is not None \
                else value
            total = round(value if n > 1 else end * rng.uniform(0.98, 0.995), 2)
            db.session.add(MrrDailyTotal(project_id=project_id, day=day, currency=currency,
                                         mrr=total, customers=max(1, round(total / 45))))
            rows += 1
            if previous is not None:
                net = total - previous
                parts = {"expansion": rng.uniform(0, 0.004) * total,
                         "reactivation": rng.uniform(0, 0.002) * total,
                         "contraction": -rng.uniform(0, 0.002) * total,
                         "churn": -rng.uniform(0, 0.004) * total}
                parts["new"] = net - sum(parts.values())
                if parts["new"] < 0:
                    parts["churn"] += parts["new"]
                    parts["new"] = 0.0
                for kind, amount in parts.items():
                    if abs(amount) < 0.01:
                        continue
                    db.session.add(MrrMovement(
                        project_id=project_id, day=day, customer_id=fake_customer,
                        currency=currency, kind=kind, mrr_before=0.0, mrr_after=0.0,
                        amount=round(amount, 2)))
                    fake_customer -= 1
                    rows += 1
            previous = total
    db.session.commit()
    return rows


class RevenueStory(threading.Thread):
    """Plays the demo's billing changes once the demo project's sync has succeeded."""

    def __init__(self, app, double, account: str, project_id: int,
                 timeout: float = 3600.0) -> None:
        super().__init__(daemon=True, name="demo-revenue-story")
        self.app, self.double, self.account = app, double, account
        self.project_id, self.timeout = project_id, timeout
        self.done = threading.Event()

    def run(self) -> None:
        try:
            with self.app.app_context():
                if self._wait_for_sync():
                    self._play()
        except Exception:
            log.exception("the demo's revenue story failed")
        finally:
            self.done.set()

    def _wait_for_sync(self) -> bool:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with project_scope(self.project_id):
                sync = integration_status(self.project_id)["sync"]
            db.session.remove()
            if sync and sync["state"] == "succeeded":
                return True
            time.sleep(0.5)
        return False

    def _customers(self) -> list[str]:
        """Emails of the newest Stripe customers with an active subscription."""
        acct = self.double.state.account(self.account)
        with self.double.state.lock:
            active = {s["customer"] for s in acct.subscriptions.items
                      if s["status"] == "active"}
            return [c["email"] for c in reversed(acct.customers.items)
                    if c["id"] in active and c.get("email") and not c.get("deleted")][:6]

    def _play(self) -> None:
        emails = self._customers()
        for email in emails[:3]:  # failed, dunned, recovered
            simulate(self.double, self.account, "charge_failed", email=email)
            self._wait_for_email(email)
            time.sleep(1.1)  # Stripe's timestamps are whole seconds: the retry is later
            simulate(self.double, self.account, "charge_succeeded", email=email)
        for email, action in zip(emails[3:], ("subscription_upgraded",
                                              "subscription_downgraded",
                                              "customer_churned"), strict=False):
            simulate(self.double, self.account, action, email=email)
        time.sleep(3)  # the webhooks land and are applied
        with project_scope(self.project_id):
            take_snapshot(self.project_id)

    def _wait_for_email(self, email: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with project_scope(self.project_id):
                found = db.session.scalar(select(Message.id).join(
                    Customer, Customer.id == Message.customer_id).where(
                    Message.project_id == self.project_id,
                    Customer.email_key == email.lower(),
                    Message.state.in_(("sent", "outbox"))).limit(1))
            db.session.remove()
            if found:
                return
            time.sleep(0.2)
