"""Configuration from the environment (names in CONTRACT.md); tests pass overrides."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

DEV_SECRET_KEY = "crowdpower-dev-secret-key-change-me"


def from_environment(instance_path: str) -> dict:
    """Read every setting CrowdPower understands; sensible embedded defaults."""
    return {
        "SECRET_KEY": os.environ.get("SECRET_KEY") or None,
        # Keys of stored secrets, newest first (older ones only decrypt); unset: derived
        # from SECRET_KEY. `crowdpower rotate-encryption` re-encrypts with the first.
        "ENCRYPTION_KEYS": [k.strip() for k in os.environ.get("ENCRYPTION_KEYS", "").split(",")
                            if k.strip()],
        "SQLALCHEMY_DATABASE_URI": normalise_database_url(
            os.environ.get("DATABASE_URL")
            or f"sqlite:///{os.path.join(instance_path, 'crowdpower.sqlite3')}"
        ),
        "REDIS_URL": os.environ.get("REDIS_URL") or None,
        "RQ_QUEUE_PREFIX": os.environ.get("RQ_QUEUE_PREFIX", ""),
        "SMTP_URL": os.environ.get("SMTP_URL") or None,
        "MAIL_FROM": os.environ.get("MAIL_FROM", "CrowdPower <noreply@crowdpower.local>"),
        "BASE_URL": os.environ.get("BASE_URL") or None,
        # Secure cookies: on when asked, or when the public URL is https
        "SESSION_COOKIE_SECURE": _flag(os.environ.get("SESSION_COOKIE_SECURE"),
                                       (os.environ.get("BASE_URL") or "").startswith("https:")),
        "SESSION_COOKIE_SAMESITE": os.environ.get("SESSION_COOKIE_SAMESITE") or "Lax",
        "OUTBOUND_ALLOWLIST": os.environ.get("OUTBOUND_ALLOWLIST", ""),
        **{k: os.environ[k] for k in ("LOGIN_LIMIT_PER_ADDRESS", "LOGIN_LIMIT_PER_ACCOUNT")
           if os.environ.get(k)},
        "JOB_RETRY_INTERVALS": [10, 60, 300],
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
    }


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def normalise_database_url(url: str) -> str:
    """Accept Heroku-style postgres:// URLs and use psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


class InsecureConfiguration(RuntimeError):
    """Refusing to start: a production install without its own keys."""


def development_mode(config: dict) -> bool:
    """Explicit development mode: ``CROWDPOWER_DEV=1``, the demo, tests, or debug."""
    return bool(config.get("CROWDPOWER_DEV") or config.get("TESTING") or config.get("DEBUG")
                or _flag(os.environ.get("CROWDPOWER_DEV"), False))


def ensure_secret_key(config: dict) -> None:
    """Production refuses to start without its own ``SECRET_KEY``: a public dev key would
    let anyone forge session cookies. Development mode falls back to it, loudly."""
    key = config.get("SECRET_KEY")
    if key and key != DEV_SECRET_KEY:
        return
    if not development_mode(config):
        raise InsecureConfiguration(
            "SECRET_KEY is not set (or is the public development key): set a long random "
            "SECRET_KEY, or CROWDPOWER_DEV=1 for a development install")
    if not key:
        warnings.warn("SECRET_KEY is not set: using the development key", stacklevel=3)
        config["SECRET_KEY"] = DEV_SECRET_KEY


# -- plugins' declared settings (crowdpower_config_defaults) -----------------------

class SettingError(ValueError):
    """An environment variable that cannot be read as its setting's type."""


def convert(key: str, raw: str, default: Any) -> Any:
    """``raw`` (from the environment) as the type of ``default``."""
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, list | tuple):
            items = [p.strip() for p in raw.split(",") if p.strip()]
            kind = type(default[0]) if default else str
            return [kind(p) for p in items]
    except ValueError as exc:
        raise SettingError(f"{key}={raw!r}: expected {type(default).__name__}") from exc
    return raw


def apply_defaults(config: dict, defaults: Mapping[str, Any],
                   environ: Mapping[str, str] | None = None) -> None:
    """Fill ``config`` from the environment, else the declared default (set keys stay)."""
    environ = os.environ if environ is None else environ
    for key, default in defaults.items():
        if key in config:  # given by the caller (tests, create_app): the environment yields
            if config[key] is None:
                config[key] = default
            continue
        raw = environ.get(key)
        config[key] = convert(key, raw, default) if raw not in (None, "") else default
