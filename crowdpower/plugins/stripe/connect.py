"""Stripe Connect OAuth: connect, callback, disconnect (to be completed)."""

from __future__ import annotations


def register_oauth_client(oauth, app) -> None:
    oauth.register(
        "stripe",
        client_id=app.config.get("STRIPE_CLIENT_ID"),
        client_secret=app.config.get("STRIPE_SECRET_KEY"),
        authorize_url=app.config["STRIPE_CONNECT_BASE"] + "/oauth/authorize",
        access_token_url=app.config["STRIPE_CONNECT_BASE"] + "/oauth/token",
        client_kwargs={"scope": "read_write",
                       "token_endpoint_auth_method": "client_secret_post"},
    )
