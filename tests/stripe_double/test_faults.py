"""Faults on demand, per account: 429s, 500s, slow answers, dropped connections."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import stripe
from crowdpower_stripe_double import StripeDouble


@pytest.fixture
def other(double: StripeDouble) -> str:
    return double.create_account()


def test_rate_limit_answers_429_for_that_account_only(
        double: StripeDouble, acct: str, other: str,
        sdk: Callable[..., stripe.StripeClient]) -> None:
    double.faults.rate_limit(acct, per_second=3)
    limited = sdk(acct)
    outcomes = []
    for _ in range(8):
        try:
            limited.v1.customers.list()
            outcomes.append("ok")
        except stripe.RateLimitError as exc:
            assert exc.http_status == 429
            assert exc.json_body["error"]["code"] == "rate_limit"
            assert exc.json_body["error"]["type"] == "invalid_request_error"
            outcomes.append("429")
    assert outcomes[:3] == ["ok"] * 3 and "429" in outcomes[3:]
    for _ in range(8):
        sdk(other).v1.customers.list()  # another account is not limited
    time.sleep(0.4)  # the bucket refills at 3 per second
    limited.v1.customers.list()


def test_fail_next_gives_n_500s_then_serves(double: StripeDouble, acct: str, other: str,
                                           sdk: Callable[..., stripe.StripeClient]) -> None:
    double.faults.fail_next(acct, 2)
    for _ in range(2):
        sdk(other).v1.customers.list()  # not consumed by another account
    for _ in range(2):
        with pytest.raises(stripe.APIError) as caught:
            sdk(acct).v1.customers.list()
        assert caught.value.http_status == 500
        assert caught.value.json_body["error"]["type"] == "api_error"
    assert sdk(acct).v1.customers.list().data == []
    double.faults.fail_next(acct, 1, status=503)
    with pytest.raises(stripe.APIError) as caught:
        sdk(acct).v1.customers.list()
    assert caught.value.http_status == 503


def test_sdk_retries_through_a_500(double: StripeDouble, acct: str,
                                   sdk: Callable[..., stripe.StripeClient]) -> None:
    double.reset_request_log()
    double.faults.fail_next(acct, 1)
    assert sdk(acct, retries=2).v1.customers.list().data == []
    assert double.request_count(account=acct, path="/v1/customers") == 2


def test_slow_delays_that_account_only(double: StripeDouble, acct: str, other: str,
                                       sdk: Callable[..., stripe.StripeClient]) -> None:
    double.faults.slow(acct, seconds=0.6, n=1)
    started = time.monotonic()
    sdk(other).v1.customers.list()
    assert time.monotonic() - started < 0.5
    started = time.monotonic()
    sdk(acct).v1.customers.list()
    assert time.monotonic() - started >= 0.6
    started = time.monotonic()
    sdk(acct).v1.customers.list()  # only the next one was slow
    assert time.monotonic() - started < 0.5


def test_drop_next_closes_the_connection(double: StripeDouble, acct: str, other: str,
                                         sdk: Callable[..., stripe.StripeClient]) -> None:
    double.faults.drop_next(acct)
    sdk(other).v1.customers.list()
    with pytest.raises(stripe.APIConnectionError):
        sdk(acct).v1.customers.list()
    assert sdk(acct).v1.customers.list().data == []


def test_fault_for_every_account(double: StripeDouble, acct: str, other: str,
                                 sdk: Callable[..., stripe.StripeClient]) -> None:
    double.faults.fail_next(None, 2)
    for account in (acct, other):
        with pytest.raises(stripe.APIError):
            sdk(account).v1.customers.list()
    sdk(acct).v1.customers.list()
    double.faults.fail_next(acct, 1)
    double.faults.clear()
    sdk(acct).v1.customers.list()


def test_request_count_includes_faulted_requests(
        double: StripeDouble, acct: str, other: str,
        sdk: Callable[..., stripe.StripeClient]) -> None:
    double.reset_request_log()
    sdk(acct).v1.customers.create(params={"email": "x@shop.test"})
    double.faults.fail_next(acct, 1)
    with pytest.raises(stripe.APIError):
        sdk(acct).v1.customers.list()
    double.faults.rate_limit(acct, per_second=1)
    sdk(acct).v1.customers.list()
    with pytest.raises(stripe.RateLimitError):
        sdk(acct).v1.customers.list()
    sdk(other).v1.customers.list()
    assert double.request_count(account=acct) == 4
    assert double.request_count(account=acct, path="/v1/customers") == 4
    assert double.request_count(account=acct, path="/v1/customers", method="get") == 3
    assert double.request_count(account=acct, method="POST") == 1
    assert double.request_count(account=other) == 1
    assert double.request_count() == 5
    double.reset_request_log()
    assert double.request_count() == 0
