"""The sync's result: customers, traits, segments, no events, and the minimum of API calls."""

from __future__ import annotations

import math

from sqlalchemy import func, select

from crowdpower.extensions import db
from crowdpower.models import Customer, Event
from crowdpower.tenancy import project_scope
from tests.conftest import api
from tests.stripe_sync.expected import account_objects, actual_traits, expected_traits

LISTS = ("/v1/customers", "/v1/products", "/v1/prices", "/v1/subscriptions", "/v1/charges",
         "/v1/disputes")


def pages(n: int) -> int:
    return max(1, math.ceil(n / 100))


def list_calls(double, account: str) -> dict[str, int]:
    return {path: double.request_count(account=account, path=path) for path in LISTS}


def test_seeded_account_imports_customers_traits_and_segments(
        stripe_double, tenant, client, connect_account, start_sync, wait_sync):
    project_id, key, _c = tenant
    account = stripe_double.create_account()
    stripe_double.seed(account, customers=250, seed=7)
    connect_account(project_id, account)
    stripe_double.reset_request_log()

    _run_id, started = start_sync(project_id)
    assert started
    run = wait_sync(project_id)
    assert run.state == "succeeded", run.error
    calls = list_calls(stripe_double, account)

    objects = account_objects(account)
    expected = expected_traits(account)
    actual = actual_traits(project_id)
    assert actual == expected
    assert run.customers_processed == run.customers_total == len(expected)
    assert run.counts["customers"] == len(objects["customer"])
    assert run.counts["subscriptions"] == len(objects["subscription"])
    assert run.counts["charges"] == len(objects["charge"])
    # Our own time per phase, beside the time spent waiting on Stripe (the benchmarks'
    # "write rate" comes from these).
    assert set(run.counts["write_ms"]) == {"customers", "products", "prices", "subscriptions",
                                           "charges", "disputes", "traits"}
    assert all(isinstance(ms, int) and ms >= 0 for ms in run.counts["write_ms"].values())
    assert isinstance(run.counts["stripe_ms"], int)

    # The page minimum of account-wide list calls, and nothing else.
    assert calls == {"/v1/customers": pages(len(objects["customer"])),
                     "/v1/products": pages(len(objects["product"])),
                     "/v1/prices": pages(len(objects["price"])),
                     "/v1/disputes": pages(len(objects["dispute"])),
                     "/v1/subscriptions": pages(len(objects["subscription"])),
                     "/v1/charges": pages(len(objects["charge"]))}
    assert run.api_calls == sum(calls.values())

    # The seed has the awkward cases the issue names.
    emails = [(c.get("email") or "").lower() for c in objects["customer"]]
    assert "" in emails, "seed has customers without email"
    assert len({e for e in emails if e}) < len([e for e in emails if e]), "seed shares emails"
    assert any(k.startswith("id:") for k in actual)

    with project_scope(project_id):
        assert db.session.scalar(select(func.count()).select_from(Event).where(
            Event.project_id == project_id)) == 0
    segments = {s["name"]: s["customer_count"]
                for s in api(client, key).get("/api/v1/segments").json["data"]}
    active = sum(1 for t in expected.values() if t.get("stripe_subscription_status") == "active")
    assert active > 0
    assert segments["Active Stripe Subscribers"] == active


def test_rerun_is_idempotent(stripe_double, tenant, connect_account, start_sync, wait_sync):
    project_id, _key, _c = tenant
    account = stripe_double.create_account()
    stripe_double.seed(account, customers=120, seed=11)
    connect_account(project_id, account)
    start_sync(project_id)
    wait_sync(project_id)
    first = actual_traits(project_id, only_stripe=False)
    _run_id, started = start_sync(project_id, reason="resync")
    assert started
    assert wait_sync(project_id).state == "succeeded"
    assert actual_traits(project_id, only_stripe=False) == first


def test_exact_cases_email_case_duplicates_no_email_deleted(
        stripe_double, tenant, client, connect_account, start_sync, wait_sync):
    project_id, key, _c = tenant
    r = api(client, key).post("/api/v1/customers", json={
        "email": "Ann@Example.com", "name": "Ann", "traits": {"plan": "pro", "vip": True}})
    assert r.status_code == 201
    ann_id = r.json["id"]

    account = stripe_double.create_account()
    ann = stripe_double.create_customer(account, email="ann@EXAMPLE.com", name="Ann S")
    price = stripe_double.create_price(account, unit_amount=1999, currency="usd",
                                       interval="month", product_name="Pro")
    stripe_double.create_subscription(account, customer=ann["id"], price=price["id"])
    dup1 = stripe_double.create_customer(account, email="dup@example.com")
    dup2 = stripe_double.create_customer(account, email="DUP@example.com")
    stripe_double.create_charge(account, customer=dup1["id"], amount=1000, currency="usd")
    stripe_double.create_charge(account, customer=dup2["id"], amount=2550, currency="usd")
    nomail = stripe_double.create_customer(account, email=None, name="No Mail")
    gone = stripe_double.create_customer(account, email="gone@example.com")
    stripe_double.delete_customer(account, gone["id"])
    connect_account(project_id, account)

    start_sync(project_id)
    run = wait_sync(project_id)
    assert run.state == "succeeded", run.error

    got = api(client, key).get(f"/api/v1/customers/{ann_id}").json
    assert got["traits"]["plan"] == "pro" and got["traits"]["vip"] is True
    assert got["traits"]["stripe_customer_id"] == ann["id"]
    assert got["traits"]["stripe_subscription_status"] == "active"
    assert got["traits"]["stripe_mrr"] == 19.99

    dups = api(client, key).get("/api/v1/customers?email=dup@example.com").json["data"]
    assert len(dups) == 1
    assert dups[0]["traits"]["stripe_total_spent"] == 35.5
    assert dups[0]["traits"]["stripe_charge_count"] == 2

    assert api(client, key).get("/api/v1/customers?email=gone@example.com").json["data"] == []
    with project_scope(project_id):
        rows = list(db.session.execute(select(Customer.email, Customer.external_id).where(
            Customer.project_id == project_id)))
    assert (None, nomail["id"]) in rows
    assert len(rows) == 3  # Ann (updated, not duplicated), dup@, the no-email one
    assert expected_traits(account) == actual_traits(project_id)
