"""Fixtures for the plugin's end-to-end tests: the double's webhooks wired to a live app."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import requests

from tests.conftest import STRIPE_WEBHOOK_SECRET, csrf_from


@dataclass
class Wired:
    double: object
    url: str
    drain: object

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until every webhook was delivered and every job ran."""
        self.double.webhooks.flush(timeout)
        self.drain(timeout)


@pytest.fixture
def wired(stripe_double, live_server, drain):
    """Webhooks from the double reach the app over real HTTP."""
    stripe_double.webhooks.configure(url=live_server.url + "/integrations/stripe/webhook",
                                     secrets=[STRIPE_WEBHOOK_SECRET], retry_delay=0.05)
    return Wired(stripe_double, live_server.url, drain)


def browser_login(base_url: str, email: str, password: str = "correct horse"):
    """A real browser-like session (requests) logged in to the live server."""
    session = requests.Session()
    page = session.get(base_url + "/login")
    response = session.post(base_url + "/login", data={
        "email": email, "password": password, "csrf_token": csrf_from(page.text)},
        allow_redirects=False)
    assert response.status_code == 302, response.text
    return session


FLASH_RE = re.compile(r'<div class="flash[^"]*"[^>]*>(.*?)</div>', re.S)


def flashes(html: str) -> list[str]:
    return [m.strip() for m in FLASH_RE.findall(html)]
