"""The REST API over HTTP: lists, filters, expansion, retrieval, errors, auth, isolation."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import requests
import stripe
from crowdpower_stripe_double import StripeDouble

from tests.stripe_double.conftest import SECRET, plain


def _walk(client: stripe.StripeClient, path: str, limit: int, **params: object) -> list[dict]:
    """Every page of a list by ``starting_after``, as the sync walks it."""
    out: list[dict] = []
    cursor = None
    while True:
        page = plain(client.raw_request("get", path, limit=limit, **params,
                                        **({"starting_after": cursor} if cursor else {})))
        out += page["data"]
        if not page["has_more"]:
            return out
        assert len(page["data"]) == limit
        cursor = page["data"][-1]["id"]


@pytest.fixture
def people(double: StripeDouble, acct: str) -> list[dict]:
    """25 customers, oldest first, one second apart."""
    base = int(time.time()) - 1000
    return [double.create_customer(acct, email=f"p{i}@shop.test", created=base + i)
            for i in range(25)]


# -- lists -------------------------------------------------------------------------------

def test_lists_are_newest_first_and_pages_cover_everything_once(
        client: stripe.StripeClient, people: list[dict]) -> None:
    first = plain(client.v1.customers.list(params={"limit": 10}))
    assert first["object"] == "list" and first["url"] == "/v1/customers"
    assert [c["id"] for c in first["data"]] == [c["id"] for c in people[::-1][:10]]
    assert first["has_more"] is True
    default = plain(client.v1.customers.list())
    assert len(default["data"]) == 10  # Stripe's default limit
    for limit in (1, 7, 25, 100):
        walked = _walk(client, "/v1/customers", limit)
        assert [c["id"] for c in walked] == [c["id"] for c in people[::-1]], limit
    # The SDK's own auto-pagination agrees.
    ids = [c.id for c in client.v1.customers.list(params={"limit": 4}).auto_paging_iter()]
    assert ids == [c["id"] for c in people[::-1]]


def test_ending_before_pages_backwards(client: stripe.StripeClient,
                                       people: list[dict]) -> None:
    newest_first = [c["id"] for c in people[::-1]]
    page = plain(client.v1.customers.list(params={"limit": 5,
                                                  "ending_before": newest_first[10]}))
    assert [c["id"] for c in page["data"]] == newest_first[5:10]
    assert page["has_more"] is True
    page = plain(client.v1.customers.list(params={"limit": 5,
                                                  "ending_before": newest_first[4]}))
    assert [c["id"] for c in page["data"]] == newest_first[:4]
    assert page["has_more"] is False
    page = plain(client.v1.customers.list(params={"limit": 3,
                                                  "starting_after": newest_first[-1]}))
    assert page == {**page, "data": [], "has_more": False}


def test_an_object_created_in_the_past_is_listed_in_created_order(
        double: StripeDouble, acct: str, client: stripe.StripeClient) -> None:
    now = int(time.time())
    new = double.create_customer(acct, email="new@x.test")
    old = double.create_customer(acct, email="old@x.test", created=now - 5000)
    listed = [c["id"] for c in plain(client.v1.customers.list())["data"]]
    assert listed == [new["id"], old["id"]]


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten"])
def test_limit_out_of_range_is_a_400_in_stripes_format(
        client: stripe.StripeClient, limit: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.raw_request("get", "/v1/customers", limit=limit)
    assert caught.value.http_status == 400
    error = caught.value.json_body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "limit" and error["code"] == "parameter_invalid_integer"
    assert error["message"]


def test_unknown_cursor_is_resource_missing(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.list(params={"starting_after": "cus_nope"})
    assert caught.value.http_status == 404 and caught.value.code == "resource_missing"


def test_subscription_status_filter_and_customer_filter(
        double: StripeDouble, acct: str, client: stripe.StripeClient) -> None:
    ann = double.create_customer(acct, email="ann@shop.test")
    bob = double.create_customer(acct, email="bob@shop.test")
    price = double.create_price(acct, 900)
    subs = {status: double.create_subscription(acct, ann["id"], price["id"], status=status)
            for status in ("active", "trialing", "past_due", "canceled", "unpaid")}
    bobs = double.create_subscription(acct, bob["id"], price["id"])
    listed = {s["id"] for s in plain(client.v1.subscriptions.list(params={"limit": 100}))["data"]}
    assert subs["canceled"]["id"] not in listed  # the default hides canceled ones
    assert {subs[s]["id"] for s in ("active", "trialing", "past_due", "unpaid")} <= listed
    everything = plain(client.v1.subscriptions.list(params={"status": "all", "limit": 100}))
    assert {s["id"] for s in everything["data"]} == {s["id"] for s in subs.values()} | {
        bobs["id"]}
    only = plain(client.v1.subscriptions.list(params={"status": "past_due"}))
    assert [s["id"] for s in only["data"]] == [subs["past_due"]["id"]]
    of_bob = plain(client.v1.subscriptions.list(params={"customer": bob["id"],
                                                        "status": "all"}))
    assert [s["id"] for s in of_bob["data"]] == [bobs["id"]]
    of_ann = _walk(client, "/v1/subscriptions", 2, customer=ann["id"], status="all")
    assert [s["id"] for s in of_ann] == [s["id"] for s in list(subs.values())[::-1]]


def test_charges_customer_filter_pages(double: StripeDouble, acct: str,
                                       client: stripe.StripeClient) -> None:
    ann = double.create_customer(acct, email="ann@shop.test")
    bob = double.create_customer(acct, email="bob@shop.test")
    mine = []
    for i in range(7):
        mine.append(double.create_charge(acct, ann["id"], 100 + i))
        double.create_charge(acct, bob["id"], 900 + i)
    walked = _walk(client, "/v1/charges", 3, customer=ann["id"])
    assert [c["id"] for c in walked] == [c["id"] for c in mine[::-1]]
    assert {c["customer"] for c in walked} == {ann["id"]}


def test_created_filters(double: StripeDouble, acct: str, client: stripe.StripeClient) -> None:
    base = 1_700_000_000
    made = [double.create_customer(acct, email=f"c{i}@shop.test", created=base + i * 100)
            for i in range(5)]
    gte = plain(client.v1.customers.list(params={"created": {"gte": base + 200}}))
    assert [c["id"] for c in gte["data"]] == [c["id"] for c in made[:1:-1]]
    window = plain(client.v1.customers.list(params={"created": {"gt": base, "lt": base + 300}}))
    assert [c["id"] for c in window["data"]] == [made[2]["id"], made[1]["id"]]
    exact = plain(client.v1.customers.list(params={"created": base + 400}))
    assert [c["id"] for c in exact["data"]] == [made[4]["id"]]


def test_expand_nested_product_and_customer(double: StripeDouble, acct: str, base_url: str,
                                            client: stripe.StripeClient) -> None:
    cus = double.create_customer(acct, email="exp@shop.test")
    price = double.create_price(acct, 4900, product_name="Team")
    double.create_subscription(acct, cus["id"], price["id"])
    page = plain(client.v1.subscriptions.list(params={"expand": ["data.customer"]}))
    sub = page["data"][0]
    assert sub["customer"]["id"] == cus["id"] and sub["customer"]["object"] == "customer"
    # Four levels on a retrieve; a list would need five (``data.`` first), which Stripe refuses.
    one = plain(client.v1.subscriptions.retrieve(
        sub["id"], params={"expand": ["items.data.price.product", "customer"]}))
    product = one["items"]["data"][0]["price"]["product"]
    assert product["object"] == "product" and product["name"] == "Team"
    assert one["customer"]["email"] == "exp@shop.test"
    # The bracket form a browser or curl sends: expand[]=…
    raw = requests.get(f"{base_url}/v1/subscriptions/{sub['id']}?"
                       "expand[]=items.data.price.product&expand[]=customer",
                       auth=(SECRET, ""), headers={"Stripe-Account": acct}, timeout=5).json()
    assert raw["customer"]["email"] == "exp@shop.test"
    assert raw["items"]["data"][0]["price"]["product"]["name"] == "Team"
    plain_list = plain(client.v1.subscriptions.list())
    assert plain_list["data"][0]["customer"] == cus["id"]
    assert plain_list["data"][0]["items"]["data"][0]["price"]["product"] == price["product"]
    charge = double.create_charge(acct, cus["id"], 100)
    got = plain(client.v1.charges.retrieve(charge["id"], params={"expand": ["customer"]}))
    assert got["customer"]["email"] == "exp@shop.test"


def test_email_filter_on_customers(double: StripeDouble, acct: str,
                                   client: stripe.StripeClient) -> None:
    a = double.create_customer(acct, email="same@shop.test")
    b = double.create_customer(acct, email="same@shop.test")
    double.create_customer(acct, email="other@shop.test")
    found = plain(client.v1.customers.list(params={"email": "same@shop.test"}))
    assert [c["id"] for c in found["data"]] == [b["id"], a["id"]]


# -- retrieve, errors, auth, isolation ----------------------------------------------------

def test_retrieve_and_resource_missing(double: StripeDouble, acct: str,
                                       client: stripe.StripeClient) -> None:
    cus = double.create_customer(acct, email="r@shop.test")
    assert client.v1.customers.retrieve(cus["id"]).email == "r@shop.test"
    for call in (lambda: client.v1.customers.retrieve("cus_missing"),
                 lambda: client.v1.subscriptions.retrieve("sub_missing"),
                 lambda: client.v1.charges.retrieve("ch_missing")):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            call()
        assert caught.value.http_status == 404
        error = caught.value.json_body["error"]
        assert error["code"] == "resource_missing" and error["type"] == "invalid_request_error"
        assert error["param"] == "id" and "No such" in error["message"]
        assert error["doc_url"].endswith("/resource-missing")


def test_unknown_url_is_a_stripe_404(base_url: str) -> None:
    response = requests.get(f"{base_url}/v1/widgets", auth=(SECRET, ""), timeout=5)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"
    response = requests.delete(f"{base_url}/v1/customers", auth=(SECRET, ""), timeout=5)
    assert response.status_code == 404
    assert response.json()["error"]["message"] == (
        "Unrecognized request URL (DELETE: /v1/customers).")


def test_missing_required_param_is_a_400(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create(params={"currency": "usd"})
    assert caught.value.http_status == 400
    assert caught.value.code == "parameter_missing" and caught.value.param == "unit_amount"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={})
    assert caught.value.http_status == 400 and caught.value.param == "charge"


def test_auth_no_key_and_bad_key_are_401(base_url: str, acct: str,
                                         sdk: Callable[..., stripe.StripeClient]) -> None:
    response = requests.get(f"{base_url}/v1/customers", headers={"Stripe-Account": acct},
                            timeout=5)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "API key" in response.json()["error"]["message"]
    with pytest.raises(stripe.AuthenticationError) as caught:
        sdk(acct, key="sk_test_wrong").v1.customers.list()
    assert caught.value.http_status == 401
    basic = requests.get(f"{base_url}/v1/customers", auth=(SECRET, ""),
                         headers={"Stripe-Account": acct}, timeout=5)
    assert basic.status_code == 200  # curl -u sk_…: works like Stripe


def test_accounts_are_isolated(double: StripeDouble, acct: str,
                               sdk: Callable[..., stripe.StripeClient]) -> None:
    other = double.create_account()
    cus = double.create_customer(acct, email="mine@shop.test")
    assert sdk(acct).v1.customers.retrieve(cus["id"]).id == cus["id"]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        sdk(other).v1.customers.retrieve(cus["id"])
    assert caught.value.http_status == 404 and caught.value.code == "resource_missing"
    assert plain(sdk(other).v1.customers.list())["data"] == []
    with pytest.raises(stripe.InvalidRequestError):
        sdk(other).v1.customers.update(cus["id"], params={"name": "Stolen"})
    with pytest.raises(stripe.InvalidRequestError):
        sdk(other).v1.customers.delete(cus["id"])
    assert double.objects(acct, "customer")[0]["name"] is None


def test_unknown_account_is_403_account_invalid(sdk: Callable[..., stripe.StripeClient]) -> None:
    with pytest.raises(stripe.PermissionError) as caught:
        sdk("acct_doesnotexist").v1.customers.list()
    assert caught.value.http_status == 403
    assert caught.value.json_body["error"]["code"] == "account_invalid"
