"""One way to talk to Stripe: a ``StripeClient`` built per call for one account.

The platform key is passed per client and the connected account per client
(``stripe_account``); ``stripe.api_key`` is never set globally, so two tenants'
calls can never mix. ``max_network_retries`` is set because StripeClient does not
retry by default. Every request names its API version (``Stripe-Version``: the one the
pinned SDK major is generated for, ``API_VERSION``), so objects keep the shapes our
mapping reads even if the account's default version moves.
"""

from __future__ import annotations

import stripe
from flask import current_app

API_VERSION: str = stripe.api_version  # e.g. "2026-10-28.endive" for stripe 16.x


def stripe_client(account: str | None = None, max_network_retries: int | None = None,
                  config: dict | None = None, test_data: bool = False) -> stripe.StripeClient:
    """``test_data``: read test-mode objects of a live account, which only the platform's
    test key can (``STRIPE_TEST_SECRET_KEY``; a live key gets 404 for them)."""
    cfg = config or current_app.config
    if not cfg.get("STRIPE_SECRET_KEY"):
        raise RuntimeError("STRIPE_SECRET_KEY is not configured")
    if test_data and not cfg.get("STRIPE_TEST_SECRET_KEY"):
        raise RuntimeError("STRIPE_TEST_SECRET_KEY is not configured")
    retries = cfg["STRIPE_MAX_NETWORK_RETRIES"] if max_network_retries is None \
        else max_network_retries
    return stripe.StripeClient(
        cfg["STRIPE_TEST_SECRET_KEY"] if test_data else cfg["STRIPE_SECRET_KEY"],
        stripe_account=account,
        client_id=cfg.get("STRIPE_CLIENT_ID"),
        base_addresses={"api": cfg["STRIPE_API_BASE"], "connect": cfg["STRIPE_CONNECT_BASE"],
                        "files": cfg["STRIPE_API_BASE"]},
        max_network_retries=retries,
        stripe_version=API_VERSION,
    )
