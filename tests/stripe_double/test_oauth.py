"""Connect OAuth: authorize (auto or through the consent page), token, deauthorize."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import stripe
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from crowdpower_stripe_double import StripeDouble

from tests.stripe_double.conftest import CLIENT_ID, SECRET, Receiver

REDIRECT = "https://app.crowdpower.test/integrations/stripe/callback"


def _authorize(base_url: str, **params: str) -> requests.Response:
    query = {"response_type": "code", "client_id": CLIENT_ID, "scope": "read_write",
             "state": "st4te", "redirect_uri": REDIRECT, **params}
    return requests.get(f"{base_url}/oauth/authorize", params=query, allow_redirects=False,
                        timeout=5)


def _query(response: requests.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def _redeem(base_url: str, code: str, secret: str = SECRET) -> requests.Response:
    return requests.post(f"{base_url}/oauth/token", timeout=5, data={
        "grant_type": "authorization_code", "code": code, "client_secret": secret})


def test_auto_approve_redirects_with_code_and_state(double: StripeDouble, base_url: str,
                                                    acct: str) -> None:
    double.oauth_auto_approve = True
    double.oauth_next_account = acct
    query = _query(_authorize(base_url))
    assert query["state"] == "st4te" and query["scope"] == "read_write"
    assert query["code"].startswith("ac_")
    token = _redeem(base_url, query["code"]).json()
    assert token["stripe_user_id"] == acct and token["token_type"] == "bearer"
    assert token["access_token"].startswith("sk_test_") and token["livemode"] is False
    assert token["scope"] == "read_write"


def test_auto_approve_without_a_chosen_account_makes_a_new_one(double: StripeDouble,
                                                               base_url: str) -> None:
    double.oauth_auto_approve = True
    token = _redeem(base_url, _query(_authorize(base_url))["code"]).json()
    assert token["stripe_user_id"] in double.state.accounts
    assert double.state.accounts[token["stripe_user_id"]].connected


def test_auto_deny_redirects_with_access_denied(double: StripeDouble, base_url: str) -> None:
    double.oauth_auto_approve = "deny"
    query = _query(_authorize(base_url))
    assert query == {"error": "access_denied", "state": "st4te",
                     "error_description": "The user denied your request"}


def test_bad_client_id_or_no_redirect_is_an_error_page(base_url: str) -> None:
    response = _authorize(base_url, client_id="ca_other")
    assert response.status_code == 400 and "Invalid client_id" in response.text
    response = _authorize(base_url, redirect_uri="")
    assert response.status_code == 400


def _consent(base_url: str) -> tuple[str, dict[str, str]]:
    page = _authorize(base_url)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    form = dict(re.findall(r'<input type=hidden name="([^"]+)" value="([^"]*)">', page.text))
    return page.text, form


def test_consent_page_approve(double: StripeDouble, base_url: str, acct: str) -> None:
    html, form = _consent(base_url)
    assert "Connect my Stripe account" in html and "Deny" in html
    assert acct in html  # the account picker lists the double's accounts
    assert form["client_id"] == CLIENT_ID and form["state"] == "st4te"
    response = requests.post(f"{base_url}/oauth/authorize", allow_redirects=False, timeout=5,
                             data={**form, "account": acct, "decision": "approve"})
    query = _query(response)
    assert query["state"] == "st4te"
    assert _redeem(base_url, query["code"]).json()["stripe_user_id"] == acct


def test_consent_page_deny(base_url: str) -> None:
    _, form = _consent(base_url)
    response = requests.post(f"{base_url}/oauth/authorize", allow_redirects=False, timeout=5,
                             data={**form, "decision": "deny"})
    assert _query(response)["error"] == "access_denied"


def test_authlib_exchange_and_single_use_code_revokes_access(
        double: StripeDouble, base_url: str, acct: str, receiver: Receiver,
        sdk: Callable[..., stripe.StripeClient]) -> None:
    """authlib (client_secret_post) redeems the code; a replay revokes the account's access."""
    double.oauth_auto_approve = True
    double.oauth_next_account = acct
    session = OAuth2Session(CLIENT_ID, SECRET, token_endpoint_auth_method="client_secret_post",
                            scope="read_write", redirect_uri=REDIRECT)
    url, state = session.create_authorization_url(f"{base_url}/oauth/authorize")
    redirect = requests.get(url, allow_redirects=False, timeout=5)
    location = redirect.headers["Location"]
    assert parse_qs(urlsplit(location).query)["state"] == [state]
    token = session.fetch_token(f"{base_url}/oauth/token", authorization_response=location)
    assert token["stripe_user_id"] == acct
    assert double.token_requests[-1]["grant_type"] == "authorization_code"
    # The access token works as an API key for that account (no Stripe-Account needed).
    own = stripe.StripeClient(token["access_token"], base_addresses={"api": base_url})
    assert own.v1.customers.list().data == []
    assert sdk(acct).v1.customers.list().data == []

    code = parse_qs(urlsplit(location).query)["code"][0]
    with pytest.raises(OAuthError) as caught:
        session.fetch_token(f"{base_url}/oauth/token", code=code)
    assert caught.value.error == "invalid_grant"
    replay = _redeem(base_url, code)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"

    with pytest.raises(stripe.PermissionError) as denied:
        sdk(acct).v1.customers.list()
    assert denied.value.json_body["error"]["code"] == "account_invalid"
    with pytest.raises(stripe.AuthenticationError):
        own.v1.customers.list()
    double.webhooks.flush()
    (event,) = [e for e in receiver.events(acct)
                if e["type"] == "account.application.deauthorized"]
    assert event["data"]["object"] == {"id": CLIENT_ID, "object": "application",
                                       "name": "CrowdPower"}


def test_token_errors(double: StripeDouble, base_url: str, acct: str) -> None:
    double.oauth_auto_approve = True
    double.oauth_next_account = acct
    code = _query(_authorize(base_url))["code"]
    wrong = _redeem(base_url, code, secret="sk_test_wrong")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    unknown = _redeem(base_url, "ac_unknown")
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_grant"
    grant = requests.post(f"{base_url}/oauth/token", timeout=5, data={
        "grant_type": "password", "code": code, "client_secret": SECRET})
    assert grant.json()["error"] == "unsupported_grant_type"
    # The code was not spent by the failed attempts; Basic auth works too.
    ok = requests.post(f"{base_url}/oauth/token", auth=(SECRET, ""), timeout=5,
                       data={"grant_type": "authorization_code", "code": code})
    assert ok.status_code == 200 and ok.json()["stripe_user_id"] == acct


def test_deauthorize_revokes_api_access(double: StripeDouble, base_url: str, acct: str,
                                        receiver: Receiver,
                                        sdk: Callable[..., stripe.StripeClient]) -> None:
    assert sdk(acct).v1.customers.list().data == []
    response = requests.post(f"{base_url}/oauth/deauthorize", auth=(SECRET, ""), timeout=5,
                             data={"client_id": CLIENT_ID, "stripe_user_id": acct})
    assert response.status_code == 200 and response.json() == {"stripe_user_id": acct}
    with pytest.raises(stripe.PermissionError) as caught:
        sdk(acct).v1.customers.list()
    assert caught.value.http_status == 403
    assert caught.value.json_body["error"]["code"] == "account_invalid"
    again = requests.post(f"{base_url}/oauth/deauthorize", auth=(SECRET, ""), timeout=5,
                          data={"client_id": CLIENT_ID, "stripe_user_id": acct})
    assert again.status_code == 401 and again.json()["error"] == "invalid_client"
    wrong = requests.post(f"{base_url}/oauth/deauthorize", auth=("sk_test_wrong", ""),
                          timeout=5, data={"client_id": CLIENT_ID, "stripe_user_id": acct})
    assert wrong.status_code == 401
    double.webhooks.flush()
    assert receiver.types(acct) == ["account.application.deauthorized"]


def test_deauthorize_through_the_sdk(double: StripeDouble, acct: str,
                                     sdk: Callable[..., stripe.StripeClient]) -> None:
    """``client.oauth.deauthorize`` (what the app calls) reaches the double's Connect base."""
    result = sdk(None).oauth.deauthorize({"client_id": CLIENT_ID, "stripe_user_id": acct})
    assert result["stripe_user_id"] == acct
    assert not double.state.accounts[acct].connected
