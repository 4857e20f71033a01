"""A Stripe App install's tokens: stored, refreshed ahead of expiry, rotated safely.

Stripe's refresh tokens rotate: a refresh kills the token it presents, so two workers
refreshing at once would leave one of them with ``invalid_grant`` and the tenant with a
dead connection. A refresh therefore runs with the token row locked, on its own
connection and transaction, and commits the new pair before anyone uses it:

- the lock is an ``UPDATE`` of the row as the transaction's first statement: on
  PostgreSQL a row lock (every worker, every machine); on SQLite it takes the database's
  write lock (SQLite has one writer), which serialises the web process's job threads too;
- under the lock the row is read again: if another worker already replaced the access
  token we were told is stale (or it is not yet due), that token is used, no call made;
- ``invalid_grant`` marks the row revoked and the connection ``reconnect_needed`` in the
  same transaction: syncs and look-ups then stop (``ReconnectNeeded``), no retry storm.

Stripe sends no ``expires_in``: access tokens live one hour from when we got them
(``STRIPE_APP_TOKEN_LIFETIME``), and we refresh ``STRIPE_APP_REFRESH_MARGIN`` seconds early.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

import requests
from flask import Flask, current_app, has_app_context
from sqlalchemy import delete, select, update

from crowdpower.plugins.stripe.models import StripeAppToken, StripeConnection
from crowdpower.services import db, utcnow

log = logging.getLogger(__name__)
TOKENS = StripeAppToken.__table__
CONNECTIONS = StripeConnection.__table__


class ReconnectNeeded(Exception):
    """The install's refresh token was refused: the tenant must connect again."""


class TokenEndpointError(Exception):
    """``/v1/oauth/token`` answered with an error (``error`` is Stripe's code)."""

    def __init__(self, error: str, description: str, status: int) -> None:
        super().__init__(f"{error}: {description}")
        self.error, self.description, self.status = error, description, status


@dataclass(frozen=True)
class Token:
    access_token: str
    issued_at: datetime


def secret_key(livemode: bool, config: dict | None = None) -> str:
    """Our own secret key of that mode: it exchanges and refreshes that mode's tokens."""
    cfg = config or current_app.config
    key = cfg.get("STRIPE_SECRET_KEY") if livemode else cfg.get("STRIPE_TEST_SECRET_KEY")
    if not key:
        raise RuntimeError("STRIPE_SECRET_KEY is not configured" if livemode else
                           "STRIPE_TEST_SECRET_KEY is not configured (test-mode installs)")
    return key


def token_request(livemode: bool, form: dict, config: dict | None = None) -> dict:
    """``POST {STRIPE_API_BASE}/v1/oauth/token`` with our key of that mode (HTTP Basic).

    stripe-python's ``client.oauth`` speaks only to connect.stripe.com, hence a plain
    request. Raises ``TokenEndpointError`` on an OAuth error, ``requests`` errors on
    network failures (transient: nothing changed on Stripe's side).
    """
    cfg = config or current_app.config
    response = requests.post(cfg["STRIPE_API_BASE"].rstrip("/") + "/v1/oauth/token",
                             data=form, auth=(secret_key(livemode, cfg), ""), timeout=30)
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code == 200 and body.get("access_token"):
        return body
    error = body.get("error")
    if isinstance(error, dict):  # an API error (e.g. a wrong secret key)
        raise TokenEndpointError(error.get("code") or error.get("type") or "error",
                                 error.get("message") or "", response.status_code)
    if response.status_code >= 500 or not error:
        response.raise_for_status()
        raise requests.RequestException(f"unexpected token answer {response.status_code}")
    raise TokenEndpointError(str(error), body.get("error_description") or "",
                             response.status_code)


def save_install(project_id: int, token: dict) -> None:
    """Store a fresh install's tokens (the caller commits, with the connection)."""
    livemode, account, now = bool(token.get("livemode")), token["stripe_user_id"], utcnow()
    db.session.execute(delete(TOKENS).where(TOKENS.c.account_id == account,
                                            TOKENS.c.livemode == livemode))
    db.session.execute(TOKENS.insert().values(
        project_id=project_id, account_id=account, livemode=livemode,
        access_token=token["access_token"], refresh_token=token["refresh_token"],
        access_issued_at=now, refresh_issued_at=now, refreshes=0, revoked_at=None))


def forget(project_id: int) -> int:
    """Delete a project's tokens (Disconnect, or the app was uninstalled)."""
    return db.session.execute(delete(TOKENS).where(TOKENS.c.project_id == project_id)).rowcount


def _app_context(app: Flask):
    return nullcontext() if has_app_context() else app.app_context()


def _where(project_id: int, account: str, livemode: bool):
    return (TOKENS.c.project_id == project_id, TOKENS.c.account_id == account,
            TOKENS.c.livemode == livemode)


def _due(issued_at: datetime, config: dict) -> bool:
    lifetime = float(config["STRIPE_APP_TOKEN_LIFETIME"])
    margin = float(config["STRIPE_APP_REFRESH_MARGIN"])
    return utcnow() >= issued_at + timedelta(seconds=max(0.0, lifetime - margin))


def current(app: Flask, project_id: int, account: str, livemode: bool) -> Token:
    """The access token to use now; refreshed first when it is due."""
    with _app_context(app):
        with db.engine.connect() as conn:
            row = conn.execute(select(TOKENS.c.access_token, TOKENS.c.access_issued_at,
                                      TOKENS.c.revoked_at).where(
                *_where(project_id, account, livemode))).first()
        if row is None or row.revoked_at is not None or not row.access_token:
            raise ReconnectNeeded("Stripe access needs reconnecting.")
        if not _due(row.access_issued_at, app.config):
            return Token(row.access_token, row.access_issued_at)
        return refresh(app, project_id, account, livemode, stale=row.access_token)


def refresh(app: Flask, project_id: int, account: str, livemode: bool,
            stale: str) -> Token:
    """Replace the access token ``stale`` (expired or due), serialised per (account, mode).

    Under the row lock: if the stored access token is no longer ``stale``, another worker
    refreshed already and its token is returned; else the refresh token is spent and the
    new pair committed before this returns.
    """
    with _app_context(app):
        engine = db.engine
        with engine.connect() as conn:
            with conn.begin():
                # The lock (see the module docstring): an UPDATE that changes nothing.
                conn.execute(update(TOKENS).where(*_where(project_id, account, livemode))
                             .values(refreshes=TOKENS.c.refreshes))
                row = conn.execute(select(TOKENS).where(
                    *_where(project_id, account, livemode))).first()
                if row is None or row.revoked_at is not None or not row.refresh_token:
                    raise ReconnectNeeded("Stripe access needs reconnecting.")
                if row.access_token != stale and not _due(row.access_issued_at, app.config):
                    return Token(row.access_token, row.access_issued_at)
                try:
                    fresh = token_request(livemode, {"grant_type": "refresh_token",
                                                     "refresh_token": row.refresh_token},
                                          app.config)
                except TokenEndpointError as exc:
                    if exc.error != "invalid_grant":
                        raise
                    _revoke(conn, project_id, account, livemode, exc.description)
                    revoked = exc
                else:
                    revoked = None
                    now = utcnow()
                    conn.execute(update(TOKENS).where(TOKENS.c.id == row.id).values(
                        access_token=fresh["access_token"],
                        refresh_token=fresh["refresh_token"], access_issued_at=now,
                        refresh_issued_at=now, refreshes=row.refreshes + 1))
            # committed: the new refresh token is durable before the access token is used
        if revoked is not None:
            log.warning("Stripe refused the refresh token of %s (livemode=%s): %s", account,
                        livemode, revoked.description)
            raise ReconnectNeeded("Stripe refused our refresh token (the app was uninstalled "
                                  "or its access revoked). Reconnect Stripe.")
        return Token(fresh["access_token"], now)


def _revoke(conn, project_id: int, account: str, livemode: bool, why: str) -> None:
    conn.execute(update(TOKENS).where(*_where(project_id, account, livemode)).values(
        revoked_at=utcnow(), access_token=None, refresh_token=None))
    conn.execute(update(CONNECTIONS).where(
        CONNECTIONS.c.project_id == project_id, CONNECTIONS.c.stripe_user_id == account,
        CONNECTIONS.c.status == "connected").values(
        status="reconnect_needed",
        last_error="Reconnect needed: Stripe no longer accepts CrowdPower's access to this "
                   "account (the app was uninstalled or its access revoked)."))
