"""Helpers of the host tests: customers with traits, and a sample plugin to install."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from crowdpower.customers import set_traits, upsert_customer
from crowdpower.extensions import db
from crowdpower.tenancy import project_scope


@pytest.fixture
def add_customer(app) -> Callable[..., int]:
    """Create (or update) a committed customer with traits; returns its id."""

    def add(project_id: int, email: str | None, traits: dict[str, Any] | None = None,
            name: str | None = None) -> int:
        with project_scope(project_id):
            if email is None:
                from crowdpower.models import Customer

                customer = Customer(project_id=project_id, name=name)
                db.session.add(customer)
                db.session.flush()
                if traits:
                    set_traits(project_id, customer.id, traits)
            else:
                customer, _ = upsert_customer(project_id, email, name, traits)
            db.session.commit()
            return customer.id

    return add


def wait_until(check: Callable[[], bool], drain: Callable[..., None],
               timeout: float = 20.0) -> None:
    """Drain the queues until ``check()`` holds (retries may be scheduled for later)."""
    deadline = time.monotonic() + timeout
    while True:
        drain()
        if check():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the timeout")
        time.sleep(0.05)
