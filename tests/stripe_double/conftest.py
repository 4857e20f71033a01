"""Fixtures of the Stripe double's own tests: one double per module, a webhook receiver.

No database: these tests talk to the double over HTTP with the real ``stripe`` SDK,
authlib and requests, exactly as the app does.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import stripe
from crowdpower_stripe_double import StripeDouble, objects
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

SECRET = "sk_test_double_suite"
CLIENT_ID = "ca_double_suite"
FIXTURES = json.loads(Path(objects.__file__).with_name("fixtures.json").read_text())


@pytest.fixture(scope="module")
def double() -> Iterator[StripeDouble]:
    d = StripeDouble(secret_key=SECRET, client_id=CLIENT_ID)
    d.test_base_url = d.start()  # type: ignore[attr-defined]
    yield d
    d.stop()


@pytest.fixture(autouse=True)
def _clean_double(request: pytest.FixtureRequest) -> Iterator[None]:
    """Faults, webhook settings and OAuth knobs do not leak from one test to the next."""
    if "double" not in request.fixturenames:
        yield
        return
    d: StripeDouble = request.getfixturevalue("double")
    d.faults.clear()
    d.webhooks.configure(url=None, secrets=[])
    d.oauth_auto_approve = False
    d.oauth_next_account = None
    yield
    d.faults.clear()
    d.webhooks.configure(url=None, secrets=[])


@pytest.fixture
def base_url(double: StripeDouble) -> str:
    return double.test_base_url  # type: ignore[attr-defined]


@pytest.fixture
def acct(double: StripeDouble) -> str:
    """A fresh connected account per test (isolation without a new double)."""
    return double.create_account(email="owner@shop.test", name="Shop")


@pytest.fixture
def sdk(base_url: str) -> Callable[..., stripe.StripeClient]:
    """``sdk(account)``: a StripeClient as the app builds one (platform key + account)."""

    def make(account: str | None, key: str = SECRET, retries: int = 0) -> stripe.StripeClient:
        return stripe.StripeClient(key, stripe_account=account, client_id=CLIENT_ID,
                                   base_addresses={"api": base_url, "connect": base_url},
                                   max_network_retries=retries)

    return make


@pytest.fixture
def client(sdk: Callable[..., stripe.StripeClient], acct: str) -> stripe.StripeClient:
    return sdk(acct)


def plain(obj: Any) -> Any:
    """A StripeObject (or ``raw_request``'s response) as plain JSON data."""
    if isinstance(obj, stripe.StripeResponse):
        return json.loads(obj.body)
    return json.loads(str(obj)) if isinstance(obj, stripe.StripeObject) else obj


# -- a webhook receiver ------------------------------------------------------------------

@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str]
    at: float

    @property
    def event(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP endpoint on loopback that records what the double POSTs to it."""

    url: str = ""
    received: list[Delivery] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answers to give next (then 200)
    lock: threading.Lock = field(default_factory=threading.Lock)
    gate: threading.Event | None = None  # when set up, answers wait until it opens

    def __call__(self, environ: dict, start_response: Any) -> Any:
        request = Request(environ)
        with self.lock:
            self.received.append(Delivery(request.get_data(), dict(request.headers),
                                          time.monotonic()))
            status = self.statuses.pop(0) if self.statuses else 200
            gate = self.gate
        if gate is not None:
            gate.wait(5)
        return Response("{}", status=status, mimetype="application/json")(
            environ, start_response)

    def events(self, account: str | None = None) -> list[dict]:
        with self.lock:
            out = [d.event for d in self.received]
        return [e for e in out if account is None or e.get("account") == account]

    def types(self, account: str) -> list[str]:
        return [e["type"] for e in self.events(account)]

    def of(self, event_id: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.received if d.event["id"] == event_id]

    def reset(self) -> None:
        with self.lock:
            self.received.clear()
            self.statuses.clear()
            self.gate = None


@pytest.fixture(scope="module")
def _receiver_server() -> Iterator[Receiver]:
    receiver = Receiver()
    server = make_server("127.0.0.1", 0, receiver, threaded=True)
    receiver.url = f"http://127.0.0.1:{server.server_port}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()


@pytest.fixture
def receiver(_receiver_server: Receiver, double: StripeDouble) -> Receiver:
    """Webhooks of the double go to a fresh receiver (one secret, fast retries)."""
    _receiver_server.reset()
    double.webhooks.configure(url=_receiver_server.url, secrets=["whsec_one"],
                              retry_delay=0.05)
    return _receiver_server
