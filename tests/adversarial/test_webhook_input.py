"""The webhook endpoint: malformed events are a 400 (never a 5xx Stripe would retry
forever), bodies are size-limited, future-dated signatures refused, and the twin rule
never drops a real change."""

from __future__ import annotations

import json
import time

import pytest
import stripe
from sqlalchemy import func, select

from crowdpower.extensions import db
from crowdpower.models import Event
from crowdpower.plugins.stripe.models import StripeWebhookEvent
from crowdpower.tenancy import project_scope
from tests.conftest import STRIPE_WEBHOOK_SECRET
from tests.stripe_plugin.conftest import wired  # noqa: F401

WEBHOOK = "/integrations/stripe/webhook"


def _post(client, body: bytes, timestamp: int | None = None):
    header = stripe.WebhookSignature.generate_signature_header(
        body.decode("utf-8", "surrogatepass"), STRIPE_WEBHOOK_SECRET, timestamp)
    return client.post(WEBHOOK, data=body, headers={"Stripe-Signature": header,
                                                    "Content-Type": "application/json"})


def _stored() -> int:
    return db.session.scalar(select(func.count()).select_from(StripeWebhookEvent))


def _event(**over) -> dict:
    return {"id": "evt_1", "type": "charge.failed", "account": "acct_1", "created": 1,
            "livemode": False, "data": {"object": {"id": "ch_1", "object": "charge"}}, **over}


MALFORMED = [
    _event(created="abc"), _event(created=1e20), _event(created=10**20), _event(created=True),
    _event(created=-1), _event(id="evt_" + "x" * 300), _event(id=""), _event(id=5),
    _event(type=["x"]), _event(type="t" * 101), _event(account="acct_" + "x" * 100),
    _event(account=7), _event(livemode="yes"), _event(data="x"), _event(data={"object": "x"}),
    _event(data={"object": {"id": "ch_1"}, "previous_attributes": "x"}), [1, 2], "evt",
    _event(data={"object": {"id": "ch_\u0000"}}),
]


@pytest.mark.parametrize("event", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_signed_events_are_400_and_not_stored(stripe_double, client, event):
    r = _post(client, json.dumps(event).encode())
    assert r.status_code == 400, (event, r.status_code, r.get_data(as_text=True))
    assert _stored() == 0


def test_body_size_is_limited(stripe_double, client):
    big = json.dumps(_event(data={"object": {"id": "ch_1", "pad": "x" * 2_000_000}}))
    r = _post(client, big.encode())
    assert r.status_code == 413 and _stored() == 0


def test_signature_dated_in_the_future_is_refused(stripe_double, client):
    body = json.dumps(_event()).encode()
    assert _post(client, body, timestamp=int(time.time()) + 3600).status_code == 400
    assert _stored() == 0
    assert _post(client, body).status_code == 200 and _stored() == 1


def test_toggling_cancel_at_period_end_three_times_records_three_events(
        wired, tenant, connect_account):  # noqa: F811
    project_id, _key, _browser = tenant
    double = wired.double
    account = double.create_account()
    connect_account(project_id, account)
    cus = double.create_customer(account, email="ann@example.com", name="Ann")
    price = double.create_price(account, 2900, "usd", product_name="Pro")
    sub = double.create_subscription(account, cus["id"], price["id"])
    wired.settle()
    for value in (True, False, True):
        double.update_subscription(account, sub["id"], cancel_at_period_end=value)
    wired.settle()
    with project_scope(project_id):
        updates = db.session.scalars(select(Event).where(
            Event.project_id == project_id,
            Event.name == "Stripe Subscription Updated").order_by(Event.id)).all()
    assert [e.properties["cancel_at_period_end"] for e in updates] == [True, False, True]
