"""The Stripe Apps OAuth 2.0 protocol, as the double speaks it.

Rules (from Stripe's docs: stripe-apps/api-authentication/oauth, stripe-apps/reference/
permissions; see /work/shared/stripe/APPS-OAUTH.md):

- install links, one per mode, each with its own ``client_id``; a test link carries an
  extra path segment (``/oauth/v2/test/<link>/authorize``);
- the code is single-use and valid for 5 minutes; it is exchanged at
  ``POST /v1/oauth/token`` authenticated with the platform's secret key *of the install's
  mode* (HTTP Basic ``sk_…:`` or Bearer);
- the answer has no ``expires_in``; access tokens live 1 hour (``access_token_ttl``,
  shortened in tests) and then answer 401 ``api_key_expired``;
- refresh tokens rotate: ``grant_type=refresh_token`` kills the presented one; presenting
  it again is ``invalid_grant``;
- an access token is the API key of one account (no ``Stripe-Account``) and reads only what
  its install's permissions grant; anything else is 403
  ``more_permissions_required_for_application`` (expanding an object needs its permission);
- there is no uninstall API: ``uninstall`` stands for the Dashboard's button (tokens die and
  ``account.application.deauthorized`` is sent).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

# The read permissions of the resources the double serves, by list path segment.
PATH_PERMISSIONS = {"customers": "customer_read", "subscriptions": "subscription_read",
                    "charges": "charge_read", "refunds": "charge_read",
                    "disputes": "dispute_read",
                    "products": "product_read", "prices": "plan_read", "plans": "plan_read",
                    "invoices": "invoice_read", "events": "event_read"}
# An expansion reaching one of these fields needs that object's permission too.
EXPAND_PERMISSIONS = {"customer": "customer_read", "product": "product_read",
                      "price": "plan_read", "plan": "plan_read", "invoice": "invoice_read",
                      "latest_invoice": "invoice_read", "subscription": "subscription_read",
                      "charge": "charge_read", "latest_charge": "charge_read",
                      "coupon": "coupon_read"}
ALL_PERMISSIONS = frozenset(PATH_PERMISSIONS.values()) | frozenset(EXPAND_PERMISSIONS.values())
CODE_TTL = 300.0


@dataclass
class Install:
    """One install of the app on one account in one mode."""

    account: str
    livemode: bool
    permissions: frozenset[str]
    alive: bool = True


@dataclass
class AccessToken:
    install: Install
    expires_at: float


@dataclass
class Apps:
    """Codes, tokens and installs of the app (one app, live and test client ids)."""

    live_client_id: str = "ca_app_live_double"
    test_client_id: str = "ca_app_test_double"
    access_token_ttl: float = 3600.0
    code_ttl: float = CODE_TTL
    permissions: frozenset[str] = ALL_PERMISSIONS  # granted by the next install
    codes: dict[str, dict] = field(default_factory=dict)
    access: dict[str, AccessToken] = field(default_factory=dict)
    refresh: dict[str, dict] = field(default_factory=dict)   # token → {install, alive}
    installs: dict[tuple[str, bool], Install] = field(default_factory=dict)
    log: list[dict] = field(default_factory=list)  # token endpoint outcomes (assertions)
    expired_hits: int = 0                 # requests refused with ``api_key_expired``
    used: set[str] = field(default_factory=set)  # permissions that let a request through
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refreshes(self, status: int = 200) -> int:
        """Refresh-token grants answered with ``status`` (200, or 400 for errors)."""
        return sum(1 for e in self.log if e["grant_type"] == "refresh_token"
                   and e["status"] == status)

    def reset(self) -> None:
        with self.lock:
            self.access_token_ttl = 3600.0
            self.code_ttl = CODE_TTL
            self.permissions = ALL_PERMISSIONS
            self.log.clear()
            self.expired_hits = 0
            self.used = set()

    def client_id(self, livemode: bool) -> str:
        return self.live_client_id if livemode else self.test_client_id

    # -- install ----------------------------------------------------------------------
    def new_code(self, account: str, livemode: bool) -> str:
        code = "ac_" + secrets.token_urlsafe(24)
        with self.lock:
            self.codes[code] = {"account": account, "livemode": livemode,
                                "created": time.time(), "used": False,
                                "permissions": frozenset(self.permissions)}
        return code

    def _issue(self, install: Install) -> dict:
        mode = "live" if install.livemode else "test"
        access = f"ek_{mode}_" + secrets.token_urlsafe(32)  # prefix: unconfirmed
        refresh = "rt_" + secrets.token_urlsafe(32)
        self.access[access] = AccessToken(install, time.time() + self.access_token_ttl)
        self.refresh[refresh] = {"install": install, "alive": True}
        return {"access_token": access, "refresh_token": refresh, "livemode": install.livemode,
                "scope": "stripe_apps", "token_type": "bearer",
                "stripe_publishable_key": f"pk_{mode}_" + secrets.token_hex(12),
                "stripe_user_id": install.account}

    def install(self, account: str, livemode: bool,
                permissions: frozenset[str] | set[str] | None = None) -> dict:
        """An install completed and its code exchanged (the Python API for fixtures)."""
        with self.lock:
            return self._issue(self._install(account, livemode, frozenset(
                self.permissions if permissions is None else permissions)))

    def _install(self, account: str, livemode: bool, permissions: frozenset[str]) -> Install:
        old = self.installs.get((account, livemode))
        if old is not None:  # a new install replaces the old one (and its tokens)
            old.alive = False
        install = Install(account, livemode, permissions)
        self.installs[(account, livemode)] = install
        return install

    def uninstall(self, account: str, livemode: bool) -> bool:
        with self.lock:
            install = self.installs.pop((account, livemode), None)
            if install is None or not install.alive:
                return False
            install.alive = False
            return True

    def set_permissions(self, account: str, livemode: bool, permissions: set[str]) -> None:
        with self.lock:
            self.installs[(account, livemode)].permissions = frozenset(permissions)

    def expire(self, account: str | None = None) -> int:
        """Make every access token (of ``account``) expire now."""
        with self.lock:
            n = 0
            for token in self.access.values():
                if account is None or token.install.account == account:
                    token.expires_at, n = 0.0, n + 1
            return n

    # -- the token endpoint -----------------------------------------------------------
    def exchange(self, key_livemode: bool, form: Any) -> tuple[int, dict]:
        """``POST /v1/oauth/token`` once the secret key's mode is known."""
        grant = form.get("grant_type")
        with self.lock:
            if grant == "authorization_code":
                status, body = self._code(key_livemode, form.get("code") or "")
            elif grant == "refresh_token":
                status, body = self._refresh(key_livemode, form.get("refresh_token") or "")
            else:
                status, body = 400, _oauth("unsupported_grant_type",
                                           f"Unsupported grant type: {grant}")
            self.log.append({"grant_type": grant, "status": status, "at": time.time(),
                             "error": body.get("error")})
            return status, body

    def _code(self, key_livemode: bool, value: str) -> tuple[int, dict]:
        code = self.codes.get(value)
        if code is None or code["livemode"] != key_livemode:
            return 400, _oauth("invalid_grant", f"Authorization code does not exist: {value}")
        if code["used"]:
            return 400, _oauth("invalid_grant", "This authorization code has already been used.")
        code["used"] = True
        if time.time() - code["created"] > self.code_ttl:
            return 400, _oauth("invalid_grant", "This authorization code has expired.")
        return 200, self._issue(self._install(code["account"], code["livemode"],
                                              code["permissions"]))

    def _refresh(self, key_livemode: bool, value: str) -> tuple[int, dict]:
        entry = self.refresh.get(value)
        if entry is None or entry["install"].livemode != key_livemode:
            return 400, _oauth("invalid_grant", f"Refresh token does not exist: {value[:8]}…")
        if not entry["alive"] or not entry["install"].alive:
            return 400, _oauth("invalid_grant", "This refresh token has been used or revoked.")
        entry["alive"] = False  # rotation: the old refresh token dies on use
        return 200, self._issue(entry["install"])

    # -- API authentication -------------------------------------------------------------
    def account_of(self, key: str) -> str | None:
        token = self.access.get(key)
        return token.install.account if token is not None else None

    def check(self, key: str, path: str, expand: list[str]) -> tuple[str | None, tuple | None]:
        """``(account, None)`` or ``(None, (status, type, message, code))`` for a token."""
        with self.lock:
            token = self.access.get(key)
            if token is None or not token.install.alive:
                return None, (401, "invalid_request_error",
                              f"Invalid API Key provided: {key[:8]}****", None)
            if time.time() >= token.expires_at:
                self.expired_hits += 1
                return None, (401, "invalid_request_error",
                              f"Expired API Key provided: {key[:8]}****. Application access "
                              "tokens expire after one hour; use your refresh token.",
                              "api_key_expired")
            needed = required_permissions(path, expand)
            missing = sorted(needed - token.install.permissions)
            if not missing:
                self.used |= needed
        if missing:
            return None, (403, "invalid_request_error",
                          "The application does not have the required permissions for this "
                          f"endpoint on account '{token.install.account}'. Having the "
                          f"'{missing[0]}' permission would allow this request to continue.",
                          "more_permissions_required_for_application")
        return token.install.account, None


def required_permissions(path: str, expand: list[str]) -> set[str]:
    """The permissions a read of ``path`` with these expansions needs."""
    parts = [p for p in path.split("/") if p]
    needed = set()
    if len(parts) >= 2 and parts[1] in PATH_PERMISSIONS:
        needed.add(PATH_PERMISSIONS[parts[1]])
    for path_ in expand:
        for field_ in str(path_).split("."):
            if field_ in EXPAND_PERMISSIONS:
                needed.add(EXPAND_PERMISSIONS[field_])
    return needed


def _oauth(error: str, description: str) -> dict:
    return {"error": error, "error_description": description}
