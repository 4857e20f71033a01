"""Connecting a Stripe account: Stripe App install (default) or legacy Connect OAuth.

``STRIPE_CONNECT_MODE=app``: "Connect Stripe" / "Connect a test-mode account" send the
user to the App's install link of that mode (copied from Stripe's Dashboard; we append
``redirect_uri`` and ``state``); the callback exchanges the code at
``POST {STRIPE_API_BASE}/v1/oauth/token`` with our secret key of that mode and stores
the tokens per (account, mode) (``tokens``). ``connect``: legacy Connect OAuth with the
platform key (``read_write``), kept for existing links.

The ``state`` is random, single-use, short-lived (``STRIPE_OAUTH_STATE_TTL``) and
bound to the user, the browser session and the project (a ``StripeOAuthState`` row).
The code is exchanged exactly once: the state is burnt in its own committed
transaction *before* the exchange, so a double-submitted callback can never present
the code a second time (Stripe revokes the connection when a code is reused).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import timedelta
from urllib.parse import urlencode

import requests
import stripe
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from flask import abort, current_app, flash, g, redirect, request, session, url_for
from sqlalchemy import select, update

from crowdpower import services
from crowdpower.plugins.stripe import tokens
from crowdpower.plugins.stripe.blueprint import bp
from crowdpower.plugins.stripe.client import stripe_client
from crowdpower.plugins.stripe.connection import connection
from crowdpower.plugins.stripe.models import StripeConnection, StripeOAuthState
from crowdpower.plugins.stripe.sync import request_sync
from crowdpower.services import (
    db,
    login_required,
    project_required,
    project_scope,
    unscoped,
    utcnow,
)

log = logging.getLogger(__name__)
NAME = "stripe"
SESSION_NONCE = "stripe_oauth_nonce"


def oauth_session() -> OAuth2Session:
    """An authlib OAuth 2 client for this app's Stripe platform (legacy Connect OAuth),
    built per call from the current app's config."""
    cfg = current_app.config
    return OAuth2Session(cfg["STRIPE_CLIENT_ID"], cfg["STRIPE_SECRET_KEY"], scope="read_write",
                         redirect_uri=redirect_uri(),
                         token_endpoint_auth_method="client_secret_post")


def _session_hash() -> str:
    nonce = session.get(SESSION_NONCE)
    if not nonce:
        nonce = session[SESSION_NONCE] = secrets.token_urlsafe(24)
    return hashlib.sha256(nonce.encode()).hexdigest()


def redirect_uri() -> str:
    base = current_app.config.get("BASE_URL")
    path = url_for("stripe.callback")
    return base.rstrip("/") + path if base else url_for("stripe.callback", _external=True)


def integrations_page(project_id: int):
    return redirect(url_for("web.integrations", project_id=project_id))


def app_mode() -> bool:
    return (current_app.config.get("STRIPE_CONNECT_MODE") or "app") != "connect"


def _new_state(project_id: int, mode: str | None) -> str:
    state = secrets.token_urlsafe(32)
    ttl = int(current_app.config["STRIPE_OAUTH_STATE_TTL"])
    db.session.add(StripeOAuthState(project_id=project_id, state=state, user_id=g.user.id,
                                    session_hash=_session_hash(), mode=mode,
                                    expires_at=utcnow() + timedelta(seconds=ttl)))
    db.session.commit()
    return state


@bp.get("/projects/<int:project_id>/integrations/stripe/connect")
@project_required
def connect(project_id: int):
    """Send the user to the App's install link (or legacy consent page) with a fresh state."""
    cfg = current_app.config
    if app_mode():
        mode = "test" if request.args.get("mode") == "test" else "live"
        link = cfg.get("STRIPE_APP_TEST_AUTHORIZE_URL" if mode == "test"
                       else "STRIPE_APP_AUTHORIZE_URL")
        key = cfg.get("STRIPE_TEST_SECRET_KEY" if mode == "test" else "STRIPE_SECRET_KEY")
        if not link or not key:
            flash("Stripe is not configured for " + ("test-mode" if mode == "test" else "live")
                  + " installs on this CrowdPower installation (" + (
                      "STRIPE_APP_TEST_AUTHORIZE_URL / STRIPE_TEST_SECRET_KEY" if mode == "test"
                      else "STRIPE_APP_AUTHORIZE_URL / STRIPE_SECRET_KEY") + ").", "error")
            return integrations_page(project_id)
        state = _new_state(project_id, mode)
        sep = "&" if "?" in link else "?"
        return redirect(link + sep + urlencode({"redirect_uri": redirect_uri(),
                                                "state": state}))
    if not cfg.get("STRIPE_CLIENT_ID") or not cfg.get("STRIPE_SECRET_KEY"):
        flash("Stripe is not configured on this CrowdPower installation "
              "(STRIPE_CLIENT_ID / STRIPE_SECRET_KEY).", "error")
        return integrations_page(project_id)
    state = _new_state(project_id, None)
    url, _state = oauth_session().create_authorization_url(
        current_app.config["STRIPE_CONNECT_BASE"] + "/oauth/authorize", state=state)
    return redirect(url)


def _claim_state(state: str) -> StripeOAuthState | None:
    """Burn the state (single use); None if unknown, used, expired or not this session's."""
    with unscoped():
        row = db.session.scalar(select(StripeOAuthState).where(StripeOAuthState.state == state))
        if row is None or row.used_at is not None or row.expires_at < utcnow():
            return None
        if row.user_id != g.user.id or not secrets.compare_digest(row.session_hash,
                                                                   _session_hash()):
            return None
        claimed = db.session.execute(update(StripeOAuthState).where(
            StripeOAuthState.id == row.id, StripeOAuthState.used_at.is_(None)).values(
            used_at=utcnow()).execution_options(synchronize_session=False)).rowcount
        db.session.commit()
        return row if claimed == 1 else None


@bp.get("/integrations/stripe/callback")
@login_required
def callback():
    state = request.args.get("state", "")
    row = _claim_state(state) if state else None
    if row is None:
        abort(400, description="This Stripe connection link has expired, was already used, "
                               "or was started in another browser session. Start again from "
                               "the Integrations page.")
    project_id = row.project_id
    with project_scope(project_id):
        if request.args.get("error"):
            if request.args["error"] == "access_denied":
                flash("You declined the Stripe connection; nothing was changed.", "warning")
            else:
                flash("Stripe did not connect: " + request.args.get(
                    "error_description", request.args["error"]), "error")
            return integrations_page(project_id)
        code = request.args.get("code")
        if not code:
            abort(400, description="Stripe sent neither a code nor an error.")
        if row.mode in ("live", "test"):
            return _app_callback(project_id, code, livemode=row.mode == "live")
        try:  # exactly once: never retried (a reused code revokes the connection)
            token = oauth_session().fetch_token(
                current_app.config["STRIPE_CONNECT_BASE"] + "/oauth/token", code=code,
                grant_type="authorization_code")
        except (OAuthError, Exception) as exc:  # noqa: B014 - network errors included
            log.warning("Stripe code exchange failed for project %s: %s", project_id,
                        type(exc).__name__)
            flash(f"Stripe refused the connection ({_describe(exc)}). Please try again.", "error")
            return integrations_page(project_id)
        message = store_connection(project_id, token)
        flash(message)
        return integrations_page(project_id)


def _app_callback(project_id: int, code: str, livemode: bool):
    """Exchange an App install's code once, with our secret key of the install's mode."""
    try:  # exactly once: the code is single-use
        token = tokens.token_request(livemode, {"grant_type": "authorization_code",
                                                "code": code})
    except tokens.TokenEndpointError as exc:
        log.warning("Stripe App code exchange failed for project %s: %s", project_id, exc.error)
        flash(f"Stripe refused the connection ({exc.description or exc.error}). "
              "Please try again.", "error")
        return integrations_page(project_id)
    except (requests.RequestException, RuntimeError) as exc:
        log.warning("Stripe App code exchange failed for project %s: %s", project_id,
                    type(exc).__name__)
        flash(f"Stripe could not be reached ({type(exc).__name__}). Please try again.", "error")
        return integrations_page(project_id)
    if bool(token.get("livemode")) != livemode:
        flash("Stripe answered for the other mode; nothing was connected.", "error")
        return integrations_page(project_id)
    flash(store_connection(project_id, token, kind="app"))
    return integrations_page(project_id)


def _describe(exc: Exception) -> str:
    if isinstance(exc, OAuthError):
        return exc.description or exc.error or "OAuth error"
    return type(exc).__name__


def store_connection(project_id: int, token: dict, kind: str = "connect") -> str:
    """Save the connection, seed what the plugin adds and start the initial sync."""
    account = token.get("stripe_user_id")
    if not account:
        return "Stripe answered without an account id; nothing was connected."
    with unscoped():
        taken = db.session.scalar(select(StripeConnection.project_id).where(
            StripeConnection.active_account_id == account,
            StripeConnection.project_id != project_id))
    if taken is not None:
        return ("This Stripe account is already connected to another CrowdPower project. "
                "Disconnect it there first.")
    with project_scope(project_id):
        conn = connection(project_id) or StripeConnection(project_id=project_id)
        db.session.add(conn)
        if conn.stripe_user_id != account:  # the tenant's name was for the other account
            conn.label = None
        conn.status, conn.stripe_user_id, conn.active_account_id = "connected", account, account
        conn.livemode = bool(token.get("livemode"))
        conn.scope, conn.kind = token.get("scope"), kind
        if kind == "app":  # tokens per (account, mode), refreshed under a lock
            tokens.forget(project_id)
            tokens.save_install(project_id, token)
        conn.publishable_key = token.get("stripe_publishable_key")
        conn.connected_at, conn.disconnected_at, conn.last_error = utcnow(), None, None
        services.enable(project_id, NAME)
        request_sync(project_id, reason="connect")
        db.session.commit()
    return f"Stripe account {account} connected. The import of its customers is shown below."


def mark_disconnected(project_id: int, reason: str | None = None) -> bool:
    """Stop using the account; customer data is kept. True if it was connected."""
    conn = connection(project_id)
    if conn is None or conn.status == "disconnected":
        return False
    with project_scope(project_id):
        conn.status, conn.active_account_id = "disconnected", None
        tokens.forget(project_id)
        conn.disconnected_at, conn.last_error = utcnow(), reason
        services.disable(project_id, NAME)
    return True


@bp.post("/projects/<int:project_id>/integrations/stripe/disconnect")
@project_required
def disconnect(project_id: int):
    conn = connection(project_id)
    if conn is None or conn.status == "disconnected":
        flash("Stripe is not connected.")
        return integrations_page(project_id)
    note = ""
    if conn.kind == "app":  # Stripe has no uninstall API: the tenant does it in Stripe
        base = current_app.config["STRIPE_APP_DASHBOARD_URL"]
        url = base if conn.livemode else base.replace("dashboard.stripe.com/",
                                                      "dashboard.stripe.com/test/", 1)
        note = (" CrowdPower's access tokens are deleted. To remove the app from your "
                f"Stripe account, uninstall it in Stripe's Dashboard: {url}")
    else:
        try:
            stripe_client().oauth.deauthorize({"client_id": current_app.config[
                "STRIPE_CLIENT_ID"], "stripe_user_id": conn.stripe_user_id})
        except stripe.oauth_error.OAuthError as exc:  # already revoked on Stripe's side
            log.info("deauthorize of %s: %s", conn.stripe_user_id, exc)
        except stripe.StripeError as exc:
            note = (" Stripe could not be reached to revoke access "
                    f"({type(exc).__name__}); revoke it in your Stripe Dashboard.")
    mark_disconnected(project_id)
    db.session.commit()
    flash("Stripe disconnected. Your customers and their data are kept." + note)
    return integrations_page(project_id)


@bp.post("/projects/<int:project_id>/integrations/stripe/resync")
@project_required
def resync(project_id: int):
    conn = connection(project_id)
    if conn is not None and conn.status == "reconnect_needed":
        flash("Reconnect Stripe before syncing.", "warning")
        return integrations_page(project_id)
    if conn is None or conn.status != "connected":
        flash("Connect Stripe before syncing.", "warning")
        return integrations_page(project_id)
    _run, started = request_sync(project_id, reason="resync")
    db.session.commit()
    flash(*(("Sync started.",) if started
            else ("A sync is already running for this project.", "warning")))
    return integrations_page(project_id)


@bp.post("/projects/<int:project_id>/integrations/stripe/settings")
@project_required
def settings(project_id: int):
    conn = connection(project_id)
    if conn is None:
        flash("Connect Stripe first.", "warning")
        return integrations_page(project_id)
    conn.accept_test_data = request.form.get("accept_test_data") == "on"
    db.session.commit()
    flash("Stripe settings saved.")
    return integrations_page(project_id)
