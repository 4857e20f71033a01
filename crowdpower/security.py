"""Browser-facing defences: security headers, session cookie flags, login throttling.

The CSP allows scripts from our origin only, plus the exact inline scripts our templates
ship (their SHA-256 hashes, computed from the template sources at start), so an injected
``<script>`` never runs; ``frame-ancestors 'none'`` stops clickjacking. Login attempts
are throttled with Flask-Limiter per address and per account (only failures count),
on Redis when ``REDIS_URL`` is set (shared by every web process), else in memory.
"""

from __future__ import annotations

import base64
import hashlib
import re

from flask import Flask, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def login_limit_per_address() -> str:
    return current_app.config["LOGIN_LIMIT_PER_ADDRESS"]


def login_limit_per_account() -> str:
    return current_app.config["LOGIN_LIMIT_PER_ACCOUNT"]


def login_account_key() -> str:
    return "login-account:" + (request.form.get("email") or "").strip().lower()[:320]


def login_failed(response) -> bool:
    return response.status_code == 401


def _inline_script_hashes(app: Flask) -> list[str]:
    """Hashes of the static inline scripts in every template the app can render."""
    hashes = set()
    loader = app.jinja_env.loader
    for name in loader.list_templates() if loader else []:
        if not name.endswith(".html"):
            continue
        source = loader.get_source(app.jinja_env, name)[0]
        for body in _SCRIPT.findall(source):
            if "{{" in body or "{%" in body:
                continue
            digest = hashlib.sha256(body.encode()).digest()
            hashes.add(f"'sha256-{base64.b64encode(digest).decode()}'")
    return sorted(hashes)


def _headers(response):
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    csp = current_app.extensions.get("crowdpower.csp")
    if csp is None:
        scripts = " ".join(["'self'", *_inline_script_hashes(current_app)])
        csp = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
               f"script-src {scripts}; object-src 'none'; base-uri 'self'; "
               "frame-ancestors 'none'")
        current_app.extensions["crowdpower.csp"] = csp
    headers.setdefault("Content-Security-Policy", csp)
    if current_app.config.get("SESSION_COOKIE_SECURE"):
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response


def init_app(app: Flask) -> None:
    config = app.config
    config.setdefault("LOGIN_LIMIT_PER_ADDRESS", "20 per 5 minutes")
    config.setdefault("LOGIN_LIMIT_PER_ACCOUNT", "10 per 15 minutes")
    config["SESSION_COOKIE_HTTPONLY"] = True
    if not config.get("SESSION_COOKIE_SAMESITE"):
        config["SESSION_COOKIE_SAMESITE"] = "Lax"
    config.setdefault("RATELIMIT_STORAGE_URI", config.get("REDIS_URL") or "memory://")
    config.setdefault("RATELIMIT_KEY_PREFIX", f"{config.get('RQ_QUEUE_PREFIX', '')}crowdpower")
    config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)   # Redis down: logins still work,
    config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)  # throttled per process
    config.setdefault("RATELIMIT_HEADERS_ENABLED", False)
    app.after_request(_headers)


def throttle_login(app: Flask) -> Limiter:
    """Wrap the login view in its limits (after the web blueprint is registered).

    One ``Limiter`` per app, not a module singleton: Flask-Limiter binds its storage to
    the instance, and every app (tests make several) must keep its own."""
    limiter = Limiter(key_func=get_remote_address, app=app)
    view = app.view_functions["web.login"]
    view = limiter.limit(login_limit_per_account, methods=["POST"], key_func=login_account_key,
                         deduct_when=login_failed, error_message=(
                             "Too many failed logins for this account; try again later."))(view)
    view = limiter.limit(login_limit_per_address, methods=["POST"], deduct_when=login_failed,
                         error_message=(
                             "Too many failed logins from this address; try again later."))(view)
    app.view_functions["web.login"] = view
    app.extensions["crowdpower.limiter"] = limiter
    return limiter
