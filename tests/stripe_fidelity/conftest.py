"""The fidelity suite talks to the Stripe double over HTTP with the real SDK (no database)."""

from tests.stripe_double.conftest import (  # noqa: F401  (fixtures)
    _clean_double,
    acct,
    base_url,
    client,
    double,
    sdk,
)
