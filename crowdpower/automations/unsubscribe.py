"""Signed unsubscribe links: ``{BASE_URL}/u/<token>``, valid forever, one per message.

The token is signed with ``SECRET_KEY`` (itsdangerous), so the public page needs no
login and no CSRF token: only the holder of a message can unsubscribe its recipient.
"""

from __future__ import annotations

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer

SALT = "crowdpower.automations.unsubscribe"


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=SALT)


def make_token(project_id: int, customer_id: int, message_id: int) -> str:
    return _serializer().dumps([project_id, customer_id, message_id])


def load_token(token: str) -> tuple[int, int, int] | None:
    """``(project_id, customer_id, message_id)``, or None for a forged/garbled token."""
    try:
        data = _serializer().loads(token)
    except BadSignature:
        return None
    if not (isinstance(data, list) and len(data) == 3 and all(isinstance(x, int) for x in data)):
        return None
    return data[0], data[1], data[2]


def base_url() -> str:
    return (current_app.config.get("BASE_URL") or "http://localhost:5000").rstrip("/")


def url_for_message(project_id: int, customer_id: int, message_id: int) -> str:
    return f"{base_url()}/u/{make_token(project_id, customer_id, message_id)}"
