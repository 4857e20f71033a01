"""MRR snapshots and movements, driven by signed webhooks from the double."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from crowdpower_stripe_double.control import simulate
from sqlalchemy import func, select

from crowdpower.extensions import db
from crowdpower.revenue.models import MrrSnapshot
from crowdpower.revenue.snapshot import take_snapshot
from crowdpower.tenancy import project_scope
from tests.conftest import api

TODAY = datetime.now(UTC).date()
D0, D1, D2, D3 = (TODAY - timedelta(days=n) for n in (3, 2, 1, 0))


@pytest.fixture
def shop(wired, tenant, connect_account):
    project_id, key, browser = tenant
    double = wired.double
    account = double.create_account()
    connect_account(project_id, account)
    ann = double.create_customer(account, email="ann@example.com", name="Ann")
    pro = double.create_price(account, 2900, "usd", product_name="Pro")
    double.create_subscription(account, ann["id"], pro["id"])
    wired.settle()
    return project_id, key, browser, account


def snap(project_id: int, day) -> dict:
    with project_scope(project_id):
        return take_snapshot(project_id, day)


def usd_eur(body: dict) -> tuple[dict, dict]:
    by = {c["currency"]: c for c in body["currencies"]}
    return by["usd"], by["eur"]


def test_movements_per_currency_from_daily_snapshots(wired, shop, client, other_tenant):
    project_id, key, browser, account = shop
    double = wired.double
    assert snap(project_id, D0)["movements"] == 0  # the first snapshot is the baseline

    double.webhooks.duplicate_next(4)  # duplicates change no state, so no movement
    simulate(double, account, "subscription_upgraded", email="ann@example.com")  # 29 → 58
    bob = double.create_customer(account, email="bob@example.com")
    big = double.create_price(account, 10000, "usd", product_name="Business")
    double.create_subscription(account, bob["id"], big["id"])
    carl = double.create_customer(account, email="carl@example.com")
    euro = double.create_price(account, 24000, "eur", interval="year", product_name="Euro")
    double.create_subscription(account, carl["id"], euro["id"])  # 240 a year = 20 a month
    wired.settle()
    assert snap(project_id, D1)["movements"] == 3

    simulate(double, account, "customer_churned", email="ann@example.com")
    wired.settle()
    snap(project_id, D2)
    simulate(double, account, "subscription_reactivated", email="ann@example.com")
    wired.settle()
    snap(project_id, D3)
    again = snap(project_id, D3)  # idempotent per day: the same rows again
    assert again["movements"] == 1 and again["previous_day"] == D2.isoformat()

    response = api(client, key).get(f"/api/v1/revenue?start={D0}&end={D3}")
    assert response.status_code == 200
    body = response.json
    assert body["main_currency"] == "usd" and body["as_of"] == D3.isoformat()
    usd, eur = usd_eur(body)
    assert usd["main"] and not eur["main"]
    assert usd["mrr"] == 158.0 and usd["customers"] == 2
    moves = {k: (v["amount"], v["customers"]) for k, v in usd["movements"].items()}
    assert moves == {"new": (100.0, 1), "expansion": (29.0, 1), "contraction": (0.0, 0),
                     "churn": (-58.0, 1), "reactivation": (58.0, 1)}
    assert usd["net_new_mrr"] == 129.0
    assert [p["mrr"] for p in usd["series"]] == [29.0, 158.0, 100.0, 158.0]
    assert eur["mrr"] == 20.0 and eur["movements"]["new"] == {"amount": 20.0, "customers": 1}
    assert eur["series"][-1]["date"] == D3.isoformat()
    # A narrower period only counts its own days' movements.
    only = api(client, key).get(f"/api/v1/revenue?start={D2}&end={D2}").json
    assert usd_eur(only)[0]["movements"]["churn"] == {"amount": -58.0, "customers": 1}
    assert usd_eur(only)[0]["movements"]["new"]["customers"] == 0

    page = browser.get(f"/projects/{project_id}/revenue?month={D3:%Y-%m}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "<svg" in html and "main currency" in html
    assert "158.00 USD" in html and "20.00 EUR" in html
    assert "cdn" not in html.lower() and "<script" not in html

    other_id, other_key, other_browser = other_tenant
    theirs = api(client, other_key).get(f"/api/v1/revenue?start={D0}&end={D3}").json
    assert theirs["currencies"] == [] and theirs["as_of"] is None
    assert other_browser.get(f"/projects/{project_id}/revenue").status_code == 404
    assert "158.00" not in other_browser.get(f"/projects/{other_id}/revenue").get_data(
        as_text=True)
    with project_scope(other_id):
        assert snap(other_id, D3)["customers"] == 0  # Stripe is not enabled there


def test_bad_periods_are_400s(shop, client):
    _project_id, key, _browser, _account = shop
    for query, code in (("month=2026-13", "invalid_month"), ("start=yesterday", "invalid_date"),
                        ("start=2026-05-02&end=2026-05-01", "invalid_period"),
                        ("start=2020-01-01&end=2026-01-01", "invalid_period")):
        response = api(client, key).get(f"/api/v1/revenue?{query}")
        assert response.status_code == 400 and response.json["error"]["code"] == code
    assert client.get("/api/v1/revenue").status_code == 401


def test_the_periodic_job_snapshots_today_once_per_day(wired, shop, app, drain):
    project_id, key, _browser, _account = shop
    from crowdpower import jobs

    before = datetime.now(UTC).date()
    for _ in range(2):
        jobs.enqueue("crowdpower.revenue.snapshot.snapshot_all", queue="default")
        drain()
    days = {before.isoformat(), datetime.now(UTC).date().isoformat()}  # around midnight
    with project_scope(project_id):
        rows = db.session.execute(select(MrrSnapshot.day, func.count()).where(
            MrrSnapshot.project_id == project_id).group_by(MrrSnapshot.day)).all()
    assert len(rows) == 1 and str(rows[0][0]) in days and rows[0][1] == 1
    periodic = [j for batch in app.extensions["crowdpower.plugins"].hook
                .crowdpower_periodic_jobs() for j in batch]
    assert ("crowdpower.revenue.snapshot.snapshot_all", 3600, "default") in periodic


def test_trial_conversion_and_downgrade_move_mrr_once_despite_reordering(wired, shop, client):
    project_id, key, _browser, account = shop
    double = wired.double
    dan = double.create_customer(account, email="dan@example.com")
    team = double.create_price(account, 4900, "usd", product_name="Team")
    double.create_subscription(account, dan["id"], team["id"], trial_days=14)
    wired.settle()
    snap(project_id, D1)  # Ann pays 29; Dan trials (no MRR)

    double.webhooks.hold()
    double.webhooks.duplicate_next(10)
    simulate(double, account, "trial_converted", email="dan@example.com")  # +49
    simulate(double, account, "subscription_downgraded", email="ann@example.com")  # 29 → 14.50
    assert double.webhooks.release("reverse")
    wired.settle()
    snap(project_id, D2)

    body = api(client, key).get(f"/api/v1/revenue?start={D2}&end={D2}").json
    [usd] = body["currencies"]
    moves = {k: (v["amount"], v["customers"]) for k, v in usd["movements"].items()
             if v["customers"]}
    assert moves == {"new": (49.0, 1), "contraction": (-14.5, 1)}
    assert usd["mrr"] == 63.5
    from tests.stripe_plugin.test_webhooks import events

    [converted] = events(project_id, "Stripe Trial Converted")
    assert converted.properties["mrr_after"] == 49.0
    [down] = events(project_id, "Stripe Subscription Downgraded")
    assert (down.properties["mrr_before"], down.properties["mrr_after"]) == (29.0, 14.5)
