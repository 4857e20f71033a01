"""The double speaks Stripe's Apps OAuth 2.0 protocol (rules in double/apps.py)."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import pytest
import requests
import stripe

from tests.conftest import STRIPE_SECRET, STRIPE_TEST_SECRET


def token(double, key: str, **form: str) -> requests.Response:
    return requests.post(double.test_base_url + "/v1/oauth/token", data=form, auth=(key, ""))


def api(double, key: str) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": double.test_base_url},
                               max_network_retries=0)


def install_code(double, account: str, test: bool = True) -> str:
    """Follow the install link (auto-approved) and return the code it redirects with."""
    link = (f"/oauth/v2/test/chnlink_x/authorize?client_id={double.apps.test_client_id}"
            if test else f"/oauth/v2/chnlink_x/authorize?client_id={double.apps.live_client_id}")
    double.oauth_next_account = account
    response = requests.get(double.test_base_url + link, params={
        "redirect_uri": "https://crowdpower.example/cb", "state": "st4te"},
        allow_redirects=False)
    assert response.status_code == 302
    query = parse_qs(urlparse(response.headers["Location"]).query)
    assert query["state"] == ["st4te"] and "scope" not in query
    return query["code"][0]


def test_install_link_checks_the_modes_client_id(stripe_double):
    wrong = requests.get(stripe_double.test_base_url + "/oauth/v2/test/chnlink_x/authorize",
                         params={"client_id": stripe_double.apps.live_client_id,
                                 "redirect_uri": "https://x.example/cb"})
    assert wrong.status_code == 400 and "Invalid client_id" in wrong.text


def test_code_is_exchanged_with_the_secret_key_of_its_mode_once(stripe_double):
    account = stripe_double.create_account()
    code = install_code(stripe_double, account, test=True)
    bad_key = token(stripe_double, "sk_test_nope", grant_type="authorization_code", code=code)
    assert bad_key.status_code == 401 and bad_key.json()["error"]["type"] == \
        "invalid_request_error"
    live_key = token(stripe_double, STRIPE_SECRET, grant_type="authorization_code", code=code)
    assert live_key.status_code == 400 and live_key.json()["error"] == "invalid_grant"
    ok = token(stripe_double, STRIPE_TEST_SECRET, grant_type="authorization_code", code=code)
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["stripe_user_id"] == account and body["livemode"] is False
    assert body["scope"] == "stripe_apps" and body["token_type"] == "bearer"
    assert body["refresh_token"] and "expires_in" not in body
    again = token(stripe_double, STRIPE_TEST_SECRET, grant_type="authorization_code", code=code)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_code_expires_after_five_minutes(stripe_double):
    assert stripe_double.apps.code_ttl == 300
    stripe_double.apps.code_ttl = 0.05
    code = install_code(stripe_double, stripe_double.create_account(), test=False)
    time.sleep(0.1)
    late = token(stripe_double, STRIPE_SECRET, grant_type="authorization_code", code=code)
    assert late.status_code == 400 and late.json()["error"] == "invalid_grant"


def test_access_token_is_the_accounts_key_and_expires(stripe_double):
    account = stripe_double.create_account()
    stripe_double.create_customer(account, email="a@x.test")
    other = stripe_double.create_account()
    stripe_double.apps.access_token_ttl = 0.2
    pair = stripe_double.install_app(account, livemode=False)
    client = api(stripe_double, pair["access_token"])
    listed = client.raw_request("get", "/v1/customers").data
    assert [c["email"] for c in listed["data"]] == ["a@x.test"]
    with pytest.raises(stripe.PermissionError):  # only its own account
        client.raw_request("get", "/v1/customers", stripe_account=other)
    time.sleep(0.25)
    with pytest.raises(stripe.AuthenticationError) as expired:
        client.raw_request("get", "/v1/customers")
    assert expired.value.http_status == 401
    assert expired.value.json_body["error"]["code"] == "api_key_expired"


def test_refresh_tokens_rotate(stripe_double):
    account = stripe_double.create_account()
    pair = stripe_double.install_app(account, livemode=True)
    wrong_mode = token(stripe_double, STRIPE_TEST_SECRET, grant_type="refresh_token",
                       refresh_token=pair["refresh_token"])
    assert wrong_mode.status_code == 400 and wrong_mode.json()["error"] == "invalid_grant"
    fresh = token(stripe_double, STRIPE_SECRET, grant_type="refresh_token",
                  refresh_token=pair["refresh_token"])
    assert fresh.status_code == 200, fresh.text
    new = fresh.json()
    assert new["refresh_token"] != pair["refresh_token"]
    assert new["access_token"] != pair["access_token"]
    reused = token(stripe_double, STRIPE_SECRET, grant_type="refresh_token",
                   refresh_token=pair["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert api(stripe_double, new["access_token"]).raw_request("get", "/v1/customers").data
    # Uninstalling in the Dashboard kills the install's tokens.
    stripe_double.uninstall_app(account, livemode=True)
    dead = token(stripe_double, STRIPE_SECRET, grant_type="refresh_token",
                 refresh_token=new["refresh_token"])
    assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant"
    with pytest.raises(stripe.AuthenticationError):
        api(stripe_double, new["access_token"]).raw_request("get", "/v1/customers")


def test_permissions_are_per_install_and_cover_expansions(stripe_double):
    account = stripe_double.create_account()
    cus = stripe_double.create_customer(account, email="a@x.test")
    price = stripe_double.create_price(account, 900, "usd", product_name="Pro")
    stripe_double.create_subscription(account, cus["id"], price["id"])
    pair = stripe_double.install_app(account, livemode=False,
                                     permissions={"customer_read", "subscription_read"})
    client = api(stripe_double, pair["access_token"])
    assert client.raw_request("get", "/v1/subscriptions").data["data"]
    with pytest.raises(stripe.PermissionError) as refused:
        client.raw_request("get", "/v1/charges")
    assert refused.value.http_status == 403
    assert refused.value.json_body["error"]["code"] == \
        "more_permissions_required_for_application"
    assert "'charge_read'" in refused.value.user_message
    stripe_double.apps.set_permissions(account, False, {"subscription_read"})
    with pytest.raises(stripe.PermissionError) as expand:
        client.raw_request("get", "/v1/subscriptions", expand=["data.customer"])
    assert "'customer_read'" in expand.value.user_message
    stripe_double.apps.set_permissions(account, False, {"customer_read", "subscription_read"})
    listed = client.raw_request("get", "/v1/subscriptions", expand=["data.customer"]).data
    assert listed["data"][0]["customer"]["email"] == "a@x.test"
