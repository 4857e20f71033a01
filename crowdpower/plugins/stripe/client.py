"""One way to talk to Stripe: a ``StripeClient`` built per call for one account.

The platform key is passed per client and the connected account per client
(``stripe_account``); ``stripe.api_key`` is never set globally, so two tenants'
calls can never mix. ``max_network_retries`` is set because StripeClient does not
retry by default. Every request names its API version (``Stripe-Version``: the one the
pinned SDK major is generated for, ``API_VERSION``), so objects keep the shapes our
mapping reads even if the account's default version moves.
"""

from __future__ import annotations

import re
import threading

import orjson
import stripe
from flask import current_app, has_app_context
from stripe._request_options import extract_options_from_dict
from stripe._util import get_api_mode

from crowdpower.plugins.stripe import tokens
from crowdpower.plugins.stripe.connection import connection as connection_for
from crowdpower.plugins.stripe.metrics import API_CALLS
from crowdpower.plugins.stripe.permissions import permission_for
from crowdpower.services import db

API_VERSION: str = stripe.api_version  # e.g. "2026-10-28.endive" for stripe 16.x


def stripe_client(account: str | None = None, max_network_retries: int | None = None,
                  config: dict | None = None, test_data: bool = False,
                  api_key: str | None = None) -> stripe.StripeClient:
    """A client with the platform key (``account`` for legacy links), or with ``api_key``
    (an App install's access token). ``test_data``: read test-mode objects of a live
    account, which only the platform's test key can (``STRIPE_TEST_SECRET_KEY``; a live
    key gets 404 for them)."""
    cfg = config or current_app.config
    if not api_key and not cfg.get("STRIPE_SECRET_KEY"):
        raise RuntimeError("STRIPE_SECRET_KEY is not configured")
    if test_data and not api_key and not cfg.get("STRIPE_TEST_SECRET_KEY"):
        raise RuntimeError("STRIPE_TEST_SECRET_KEY is not configured")
    retries = cfg["STRIPE_MAX_NETWORK_RETRIES"] if max_network_retries is None \
        else max_network_retries
    return stripe.StripeClient(
        api_key or (cfg["STRIPE_TEST_SECRET_KEY"] if test_data else cfg["STRIPE_SECRET_KEY"]),
        stripe_account=account,
        client_id=cfg.get("STRIPE_CLIENT_ID"),
        base_addresses={"api": cfg["STRIPE_API_BASE"], "connect": cfg["STRIPE_CONNECT_BASE"],
                        "files": cfg["STRIPE_API_BASE"]},
        max_network_retries=retries,
        stripe_version=API_VERSION,
    )


def get_json(client: stripe.StripeClient, path: str, **params) -> dict:
    """``client.raw_request("get", path, **params).data``, the body parsed by orjson.

    The SDK decodes every answer with ``json.loads`` into ``OrderedDict``s: 2.5 ms of a
    100-charge list page (≈280 KB), held under the GIL the sync's writing thread needs;
    orjson takes 0.5 ms. The request is the SDK's own (``raw_request``'s steps: headers,
    API version, telemetry), and any other answer goes through the SDK's interpretation,
    so errors are raised exactly as ``raw_request`` raises them.
    """
    options, params = extract_options_from_dict(dict(params))
    api_mode = get_api_mode(path)
    requestor = client._requestor
    rbody, rcode, rheaders = requestor.request_raw(
        "get", path, params=params, options=options, base_address="api",
        api_mode=api_mode, usage=["raw_request"])
    if 200 <= rcode < 300:
        try:
            data = orjson.loads(rbody)  # type: ignore[arg-type]
        except orjson.JSONDecodeError:
            data = None  # the SDK's answer for a broken body (APIError)
        if isinstance(data, dict):
            return data
    return requestor._interpret_response(rbody, rcode, rheaders, api_mode).data


def error_code(exc: stripe.StripeError) -> str | None:
    """Stripe's ``error.code`` (the SDK sets ``.code`` only on some error classes)."""
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    return getattr(exc, "code", None) or error.get("code")


# Access tokens Stripe answered 401 for while the refresh had to wait (SQLite only, one
# process): the next use refreshes them first, before its job writes anything.
STALE_TOKENS: set[str] = set()


class RefreshDeferred(Exception):
    """A 401 came while this thread holds SQLite's write lock: the refresh (which commits on
    its own connection) cannot run now; the caller rolls back and retries."""


def _holds_sqlite_write_lock() -> bool:
    if not has_app_context() or db.engine.dialect.name != "sqlite":
        return False
    if not db.session().in_transaction():
        return False
    dbapi = db.session.connection().connection.dbapi_connection
    return bool(getattr(dbapi, "in_transaction", False))


class MissingPermission(Exception):
    """A 403 ``more_permissions_required_for_application``: the install lacks ``permission``."""

    def __init__(self, permission: str, message: str) -> None:
        super().__init__(message)
        self.permission = permission


def needed_permission(path: str, params: dict, message: str) -> str:
    """The permission a refused read needed: as Stripe's message names it, else ours."""
    found = re.search(r"'([a-z_]+_(?:read|write))'", message or "")
    return found.group(1) if found else permission_for(path, params)


class AccountClient:
    """Reads one connected account, whichever way it is connected (the one client factory).

    App installs: the install's access token is the API key (no ``Stripe-Account``), refreshed
    ahead of expiry and once on a 401 (``api_key_expired``; then the same request is sent
    again); a refused refresh raises ``tokens.ReconnectNeeded``. Legacy Connect links: the
    platform key with ``Stripe-Account``. A 403 for a missing App permission raises
    ``MissingPermission``. Safe to use from a helper thread (no app context needed).
    """

    def __init__(self, app, project_id: int, account: str, livemode: bool, kind: str,
                 max_network_retries: int | None = None) -> None:
        self.app, self.project_id, self.account = app, project_id, account
        self.livemode, self.kind = livemode, kind
        self.retries = max_network_retries
        # (access token, issued at, client), replaced whole so threads never see a mix
        self._current: tuple[str | None, object, stripe.StripeClient | None] = \
            (None, None, None)
        self._lock = threading.Lock()
        self._connect_clients: dict[bool, stripe.StripeClient] = {}
        self._local = threading.local()

    @property
    def calls(self) -> int:
        """Requests this thread sent (a 401 and its retry are two). Per thread: a sync's
        list fetchers share the client, and each counts its own calls."""
        return getattr(self._local, "calls", 0)

    @calls.setter
    def calls(self, value: int) -> None:
        self._local.calls = value

    def _app_client(self, refresh_stale: str | None = None) -> stripe.StripeClient:
        token_now, issued, client = self._current
        if refresh_stale is None and client is not None and \
                token_now not in STALE_TOKENS and not tokens._due(issued, self.app.config):
            self._local.token = token_now  # the token this thread's request is sent with
            return client
        with self._lock:  # a sync's list fetchers share this client: one refresh at a time
            if refresh_stale is None:
                token = tokens.current(self.app, self.project_id, self.account, self.livemode)
                if token.access_token in STALE_TOKENS:
                    refresh_stale = token.access_token
            if refresh_stale is not None:
                token = tokens.refresh(self.app, self.project_id, self.account,
                                       self.livemode, stale=refresh_stale)
                STALE_TOKENS.discard(refresh_stale)
            token_now, issued, client = self._current
            if token.access_token != token_now or client is None:
                client = stripe_client(max_network_retries=self.retries,
                                       config=self.app.config, api_key=token.access_token)
                self._current = (token.access_token, token.issued_at, client)
            self._local.token = token.access_token
            return client

    @property
    def _token(self) -> str | None:
        """The access token of this thread's last request (another thread may have
        refreshed it since: then the refresh finds it replaced and spends nothing)."""
        return getattr(self._local, "token", None)

    def _connect_client(self, test_data: bool) -> stripe.StripeClient:
        """A legacy link's client, built once per key: its HTTP session (one per thread,
        in the SDK) keeps the connection to Stripe alive across a sync's pages."""
        client = self._connect_clients.get(test_data)
        if client is None:
            client = self._connect_clients[test_data] = stripe_client(
                self.account, self.retries, self.app.config, test_data=test_data)
        return client

    def prepare(self) -> None:
        """Have a usable access token now (refreshing if due), before the caller writes."""
        if self.kind == "app":
            self._app_client()

    def get(self, path: str, test_data: bool = False, **params) -> dict:
        """``get_object`` counted in ``crowdpower_stripe_api_calls`` by outcome."""
        sent = self.calls
        try:
            data = self.get_object(path, test_data=test_data, **params)
        except stripe.StripeError as exc:
            outcome = "rate_limited" if getattr(exc, "http_status", None) == 429 else "error"
            API_CALLS.labels(outcome="ok").inc(max(0, self.calls - sent - 1))
            API_CALLS.labels(outcome=outcome).inc()
            raise
        API_CALLS.labels(outcome="ok").inc(max(1, self.calls - sent))
        return data

    def get_object(self, path: str, test_data: bool = False, **params) -> dict:
        """``GET path`` → the decoded JSON object (``StripeError`` on failure, as the SDK).

        ``test_data`` (legacy links): a test-mode object of a live account, read with the
        platform's test key. An App install reads only its own mode.
        """
        try:
            self.calls += 1
            if self.kind != "app":
                return get_json(self._connect_client(test_data), path,
                                stripe_account=self.account, **params)
            client = self._app_client()
            try:
                return get_json(client, path, **params)
            except stripe.AuthenticationError:
                # ``api_key_expired`` (the token outlived our clock), or a token Stripe no
                # longer knows (the app was uninstalled): refresh once, then send the same
                # request again. A refused refresh raises ``ReconnectNeeded``.
                self.calls += 1
                if _holds_sqlite_write_lock():
                    STALE_TOKENS.add(self._token)  # type: ignore[arg-type]
                    raise RefreshDeferred("Stripe access token expired mid-transaction; "
                                          "retrying after a refresh") from None
                return get_json(self._app_client(refresh_stale=self._token), path, **params)
        except stripe.PermissionError as exc:
            if error_code(exc) != "more_permissions_required_for_application":
                raise
            permission = needed_permission(path, params, exc.user_message or str(exc))
            raise MissingPermission(permission, (
                f"CrowdPower's Stripe App is missing the permission {permission} on this "
                "account: update the app's permissions in Stripe (reinstall it) and "
                "Reconnect.")) from exc


def account_client(project_id: int, max_network_retries: int | None = None,
                   conn=None) -> AccountClient:
    """The client for a project's connected account (its ``StripeConnection``)."""
    if conn is None:
        conn = connection_for(project_id)
    if conn is None or not conn.stripe_user_id:
        raise RuntimeError("Stripe is not connected to this project")
    return AccountClient(current_app._get_current_object(), project_id,  # type: ignore[attr-defined]
                         conn.stripe_user_id, bool(conn.livemode),
                         getattr(conn, "kind", None) or "connect", max_network_retries)
