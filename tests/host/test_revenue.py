"""The host's revenue and attribution features with a non-Stripe plugin: nothing in them
knows Stripe; a plugin names its MRR traits and its conversion events through hooks."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from crowdpower.plugins import hookimpl
from crowdpower.revenue.snapshot import take_snapshot
from crowdpower.tenancy import project_scope
from tests.conftest import api


class SeatsBilling:
    """A billing plugin of its own: MRR in ``seats_mrr``/``seats_currency``; a paid
    invoice (``total`` in ``cur``) is what its reminders are for."""

    @hookimpl
    def crowdpower_revenue_sources(self, project_id):
        return [{"mrr_trait": "seats_mrr", "currency_trait": "seats_currency"}]

    @hookimpl
    def crowdpower_conversion_events(self, project_id):
        return [{"name": "Invoice Paid", "amount_property": "total",
                 "currency_property": "cur"}]


@pytest.fixture
def seats(app_config):
    app_config["EXTRA_PLUGINS"] = [SeatsBilling()]


def customer(client, key: str, email: str, **traits) -> int:
    response = api(client, key).post("/api/v1/customers", json={"email": email,
                                                                 "traits": traits})
    assert response.status_code in (200, 201), response.json
    return response.json["id"]


def test_snapshots_read_the_traits_a_plugin_names(seats, tenant, client, other_tenant):
    project_id, key, _browser = tenant
    today = datetime.now(UTC).date()
    customer(client, key, "ann@example.com", seats_mrr=100, seats_currency="USD")
    customer(client, key, "bob@example.com", seats_mrr=50, seats_currency="eur")
    customer(client, key, "cy@example.com", seats_mrr=0, seats_currency="usd")  # not paying
    with project_scope(project_id):
        assert take_snapshot(project_id, today - timedelta(days=1))["customers"] == 2
    customer(client, key, "ann@example.com", seats_mrr=150)
    with project_scope(project_id):
        assert take_snapshot(project_id, today)["movements"] == 1
    body = api(client, key).get(f"/api/v1/revenue?start={today - timedelta(days=1)}"
                                f"&end={today}").json
    by = {c["currency"]: c for c in body["currencies"]}
    assert body["main_currency"] == "usd" and set(by) == {"usd", "eur"}
    assert by["usd"]["mrr"] == 150.0 and by["usd"]["movements"]["expansion"] == {
        "amount": 50.0, "customers": 1}
    assert by["eur"]["mrr"] == 50.0 and by["eur"]["net_new_mrr"] == 0
    _other_id, other_key, _ = other_tenant
    assert api(client, other_key).get("/api/v1/revenue").json["currencies"] == []


def test_a_plugins_conversion_event_is_credited_to_the_last_message(seats, tenant, client,
                                                                    drain):
    _project_id, key, _browser = tenant
    ann = customer(client, key, "ann@example.com")
    made = api(client, key).post("/api/v1/automations", json={
        "name": "Invoice reminder", "trigger": "Invoice Due", "subject": "Your invoice",
        "text": "Please pay {{ event.properties.total }}."})
    assert made.status_code == 201
    api(client, key).post(f"/api/v1/customers/{ann}/events", json={
        "name": "Invoice Due", "properties": {"total": 99}})
    drain()
    time.sleep(1.1)
    api(client, key).post(f"/api/v1/customers/{ann}/events", json={
        "name": "Invoice Paid", "properties": {"total": 99, "cur": "gbp"}})
    drain()
    stats = api(client, key).get(f"/api/v1/automations/{made.json['id']}").json["stats"]
    assert stats == {"sent": 1, "conversions": 1, "converted_customers": 1,
                     "recovered": [{"currency": "gbp", "amount": 99.0}]}
