"""Each rule of ``double/validation.py``: the double refuses what Stripe refuses, in Stripe's shape.

Every request goes through the real ``stripe`` SDK (or plain HTTP, for the raw body), so
what is asserted is what our code would see from api.stripe.com.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
import stripe
from crowdpower_stripe_double import StripeDouble, validation

from tests.stripe_double.conftest import SECRET


def refused(call) -> stripe.InvalidRequestError:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        call()
    err = caught.value
    assert err.error is not None and err.error.type == "invalid_request_error"
    return err


def test_unknown_parameter(client: stripe.StripeClient) -> None:
    err = refused(lambda: client.v1.customers.list(params={"colour": "blue"}))  # type: ignore[typeddict-unknown-key]
    assert (err.http_status, err.code, err.param) == (400, "parameter_unknown", "colour")
    assert err.user_message == "Received unknown parameter: colour"
    nested = refused(lambda: client.v1.customers.list(params={"created": {"after": 1}}))  # type: ignore[typeddict-item]
    assert nested.param == "created[after]" and nested.code == "parameter_unknown"
    # The SDK's request options are client settings, not parameters (stripe-python#853).
    with pytest.raises(validation.StripeError) as caught:
        validation.validate("GET", "/v1/customers", {"api_key": "sk_test_x"})
    assert caught.value.code == "parameter_unknown" and caught.value.param == "api_key"


def test_bad_enum_value(client: stripe.StripeClient) -> None:
    err = refused(lambda: client.v1.subscriptions.list(params={"status": "alll"}))
    assert err.http_status == 400 and err.param == "status"
    allowed = validation.enum_values(validation.fields_of(stripe.params.SubscriptionListParams)[
        "status"])
    assert {"all", "ended", "active", "canceled"} <= set(allowed)
    assert err.user_message == ("Invalid status: must be one of " + ", ".join(allowed[:-1]) +
                                f", or {allowed[-1]}")


def test_bad_nested_enum_value(client: stripe.StripeClient) -> None:
    err = refused(lambda: client.v1.prices.create(params={
        "currency": "usd", "unit_amount": 100, "product_data": {"name": "X"},
        "recurring": {"interval": "fortnight"}}))  # type: ignore[typeddict-item]
    assert err.param == "recurring[interval]"
    assert err.user_message.startswith("Invalid interval: must be one of day, month, week")


@pytest.mark.parametrize("limit,message", [
    (0, "This value must be greater than or equal to 1."),
    (101, "This value must be less than or equal to 100."),
    ("ten", "Invalid integer: ten"),
])
def test_limit_outside_1_to_100(client: stripe.StripeClient, limit, message) -> None:
    err = refused(lambda: client.v1.charges.list(params={"limit": limit}))
    assert (err.http_status, err.code, err.param) == (400, "parameter_invalid_integer", "limit")
    assert err.user_message == message


def test_limit_bounds_are_accepted(client: stripe.StripeClient) -> None:
    assert client.v1.charges.list(params={"limit": 1}).data == []
    assert client.v1.charges.list(params={"limit": 100}).data == []


def test_expansion_deeper_than_4_levels(client: stripe.StripeClient) -> None:
    # The path the sync used to send: five levels, as the issue reports from real Stripe.
    err = refused(lambda: client.v1.subscriptions.list(
        params={"expand": ["data.items.data.price.product"]}))
    assert (err.http_status, err.param) == (400, "expand")
    assert err.user_message == "You cannot expand more than 4 levels of a property."


def test_expansion_of_a_field_that_is_not_expandable(client: stripe.StripeClient,
                                                     double: StripeDouble, acct: str) -> None:
    err = refused(lambda: client.v1.subscriptions.list(params={"expand": ["data.items"]}))
    assert err.user_message == "This property cannot be expanded (items)." and err.param == "expand"
    # ``customer`` is expandable on a subscription, but a list's objects are under ``data``.
    err = refused(lambda: client.v1.subscriptions.list(params={"expand": ["customer"]}))
    assert err.user_message == ("This property cannot be expanded (customer). You may want to "
                                "try expanding 'data.customer' instead.")
    cus = double.create_customer(acct, email="x@shop.test")
    err = refused(lambda: client.v1.customers.retrieve(cus["id"], params={"expand": ["email"]}))
    assert err.user_message == "This property cannot be expanded (email)."


def test_expandable_fields_pass(client: stripe.StripeClient, double: StripeDouble,
                                acct: str) -> None:
    cus = double.create_customer(acct, email="ok@shop.test")
    sub = double.create_subscription(acct, cus["id"], double.create_price(acct, 900)["id"])
    got = client.v1.subscriptions.retrieve(sub["id"], params={
        "expand": ["customer", "items.data.price.product", "discounts.source.coupon"]})
    assert got.customer.email == "ok@shop.test"  # type: ignore[union-attr]
    client.v1.subscriptions.list(params={"expand": ["data.customer", "data.latest_invoice"]})


def test_starting_after_an_unknown_id(client: stripe.StripeClient) -> None:
    err = refused(lambda: client.v1.subscriptions.list(params={"starting_after": "sub_nope"}))
    assert (err.http_status, err.code, err.param) == (404, "resource_missing", "starting_after")
    assert err.user_message == "No such subscription: 'sub_nope'"
    err = refused(lambda: client.v1.charges.list(params={"ending_before": "ch_nope"}))
    assert err.param == "ending_before"


def test_empty_string_for_a_parameter_that_cannot_be_unset(client: stripe.StripeClient,
                                                           double: StripeDouble,
                                                           acct: str) -> None:
    cus = double.create_customer(acct, email="e@shop.test", name="E")
    err = refused(lambda: client.v1.customers.update(cus["id"], params={"email": ""}))
    assert (err.code, err.param) == ("parameter_invalid_empty", "email")
    # ``metadata`` is typed ``Literal['']|Dict[str, str]``: "" unsets it.
    assert client.v1.customers.update(cus["id"], params={"metadata": ""}).metadata.to_dict() == {}


def test_missing_required_parameter(client: stripe.StripeClient) -> None:
    err = refused(lambda: client.v1.products.create(params={}))  # type: ignore[typeddict-item]
    assert (err.code, err.param) == ("parameter_missing", "name")
    assert err.user_message == "Missing required param: name."


def test_wrong_type_for_an_integer_or_boolean(client: stripe.StripeClient, double: StripeDouble,
                                              acct: str) -> None:
    cus = double.create_customer(acct, email="t@shop.test")
    sub = double.create_subscription(acct, cus["id"], double.create_price(acct, 900)["id"])
    err = refused(lambda: client.v1.subscriptions.update(
        sub["id"], params={"cancel_at_period_end": "soon"}))  # type: ignore[typeddict-item]
    assert err.param == "cancel_at_period_end" and err.user_message == "Invalid boolean: soon"
    err = refused(lambda: client.v1.customers.list(params={"created": "yesterday"}))  # type: ignore[typeddict-item]
    assert err.code == "parameter_invalid_integer" and err.param == "created"


def test_error_body_is_stripes_shape(base_url: str, acct: str) -> None:
    body = requests.get(f"{base_url}/v1/customers?limit=500", auth=(SECRET, ""),
                        headers={"Stripe-Account": acct}, timeout=5)
    assert body.status_code == 400
    error = body.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "limit"
    assert error["code"] == "parameter_invalid_integer"
    assert error["doc_url"] == "https://stripe.com/docs/error-codes/parameter-invalid-integer"
    assert body.headers["Request-Id"].startswith("req_")


# -- the rules come from the SDK, and the SDK still says what they assume ------------------

def test_every_api_route_of_the_double_is_an_sdk_endpoint(double: StripeDouble) -> None:
    samples = {"kind": ["customers", "subscriptions", "charges", "prices", "products", "events"],
               "oid": ["x_1"]}
    missing = []
    for rule in double.url_map.iter_rules():
        if not rule.rule.startswith("/v1"):
            continue
        for kind in samples["kind"] if "<any" in rule.rule else [None]:
            path = re.sub(r"<any\([^)]*\):kind>", kind or "", rule.rule).replace("<oid>", "x_1")
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                if kind == "events" and method != "GET":
                    continue  # routed, but answered "cannot be created/updated" by the double
                if validation.endpoint_for(method, path) is None:
                    missing.append(f"{method} {path}")
    # POST /v1/oauth/token is the Stripe Apps token endpoint: documented by Stripe
    # (stripe-apps/api-authentication/oauth), not in stripe-python (its ``oauth`` speaks
    # only to connect.stripe.com).
    allowed_gaps = {"POST /v1/events", "DELETE /v1/charges/x_1", "DELETE /v1/prices/x_1",
                    "POST /v1/oauth/token"}
    assert set(missing) <= allowed_gaps, missing


def test_list_limit_range_is_what_the_sdk_documents() -> None:
    source = Path(stripe.params.__file__).with_name("_subscription_list_params.py").read_text()
    assert "Limit can range between 1 and 100" in source
    assert validation.LIMIT_RANGE == (1, 100)


def test_expandable_fields_come_from_the_resource_types() -> None:
    ann = stripe.Subscription.__annotations__
    assert "ExpandableField" in str(ann["customer"]) or "Union[str" in str(ann["customer"])
    assert "ListObject" in str(ann["items"])  # a list, not expandable itself
    ep = validation.endpoint_for("GET", "/v1/subscriptions/sub_1")
    assert ep is not None and ep.resource is stripe.Subscription and not ep.is_list
    validation.check_expansion(ep, "items.data.price.product")
    with pytest.raises(validation.StripeError):
        validation.check_expansion(ep, "items")


def test_the_plugin_only_sends_requests_stripe_accepts() -> None:
    from crowdpower.plugins.stripe import events, sync

    for _kind, path, extra in sync.LISTS.values():
        validation.validate("GET", path, {"limit": "100", "starting_after": "x", **extra})
    for kind, expand in events.FETCH_EXPAND.items():
        validation.validate("GET", f"/v1/{kind}s/x_1", {"expand": expand} if expand else {})


def test_our_client_pins_the_sdk_api_version(app, double: StripeDouble) -> None:
    from crowdpower.plugins.stripe.client import API_VERSION, stripe_client

    assert API_VERSION == stripe.api_version
    base = double.test_base_url  # type: ignore[attr-defined]
    account = double.create_account()
    double.reset_request_log()
    client = stripe_client(account, config={**app.config, "STRIPE_SECRET_KEY": SECRET,
                                            "STRIPE_API_BASE": base, "STRIPE_CONNECT_BASE": base})
    response = client.raw_request("get", "/v1/customers", stripe_account=account, limit=1)
    assert double.versions == {API_VERSION: 1}
    assert response.headers["Stripe-Version"] == API_VERSION


def test_real_catalogue_shapes_can_be_created_through_the_sdk(client: stripe.StripeClient,
                                                              double: StripeDouble,
                                                              acct: str) -> None:
    tiered = client.v1.prices.create(params={
        "currency": "usd", "product_data": {"name": "Seats"}, "billing_scheme": "tiered",
        "tiers_mode": "graduated", "recurring": {"interval": "month"},
        "tiers": [{"up_to": 5, "unit_amount": 1000}, {"up_to": "inf", "unit_amount": 800}]})
    assert tiered.unit_amount is None and tiered.billing_scheme == "tiered"
    got = client.v1.prices.retrieve(tiered.id, params={"expand": ["tiers"]})
    assert [t.up_to for t in got.tiers] == [5, None]  # type: ignore[union-attr]
    metered = client.v1.prices.create(params={
        "currency": "usd", "unit_amount_decimal": "0.5", "product_data": {"name": "Calls"},
        "recurring": {"interval": "month", "usage_type": "metered"}})
    assert metered.recurring.usage_type == "metered"  # type: ignore[union-attr]
    coupon = double.create_coupon(acct, percent_off=10)
    cus = client.v1.customers.create(params={"email": "cat@shop.test"})
    sub = client.v1.subscriptions.create(params={
        "customer": cus.id, "items": [{"price": tiered.id, "quantity": 7},
                                      {"price": metered.id}],
        "discounts": [{"coupon": coupon["id"]}]})
    assert len(sub["items"].data) == 2 and len(sub.discounts) == 1
    assert isinstance(sub.discounts[0], str)
