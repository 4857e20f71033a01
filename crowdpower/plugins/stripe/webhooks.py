"""The Connect webhook endpoint: verify, store, acknowledge.

Receiving does the least that makes an event safe: verify the signature on the raw
body, store the raw event (unique on its id; one autocommitted statement that also
routes it to its project), ask for that project's inbox to be drained (``inbox``),
answer 2xx. If the database is down we answer 503 so Stripe retries; if the queue is
down the row waits in the inbox for the sweeper. Applying events is ``events``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import stripe
from flask import current_app, jsonify, request
from sqlalchemy import Boolean, bindparam, text
from sqlalchemy.exc import SQLAlchemyError

from crowdpower.plugins.stripe import mapping
from crowdpower.plugins.stripe.blueprint import bp
from crowdpower.plugins.stripe.inbox import (  # noqa: F401 - dotted job names of queued jobs
    drain_inbox,
    process_event,
    request_drain,
    sweep_inbox,
)
from crowdpower.plugins.stripe.metrics import WEBHOOK_ACKS, ack_outcome
from crowdpower.services import UTCDateTime, db, utcnow

log = logging.getLogger(__name__)


def _reply(status: int, **body: Any):
    WEBHOOK_ACKS.labels(outcome=ack_outcome(status, body)).inc()
    response = jsonify(body)
    response.status_code = status
    return response


def webhook_secrets() -> list[str]:
    """The signing secrets of our Connect endpoints: live (``STRIPE_WEBHOOK_SECRET``) and
    test mode (``STRIPE_TEST_WEBHOOK_SECRET``), each comma-separated during rotation."""
    found: list[str] = []
    for key in ("STRIPE_WEBHOOK_SECRET", "STRIPE_TEST_WEBHOOK_SECRET"):
        raw = current_app.config.get(key) or ""
        if isinstance(raw, list | tuple):
            found += [s for s in raw if s]
        else:
            found += [s.strip() for s in raw.split(",") if s.strip()]
    return found


def verify(payload: bytes, header: str | None, secrets: list[str], tolerance: int) -> bool:
    """True if any configured secret signed this exact body (Stripe's scheme, via the SDK)."""
    if not header:
        return False
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance)
            return True
        except stripe.SignatureVerificationError:
            continue
    return False


# Route and store in one round trip: the project connected to the event's account (if
# any) is looked up inside the insert; a duplicate event id inserts nothing.
STORE_EVENT = text("""
INSERT INTO stripe_webhook_events (event_id, account_id, project_id, type, object_key,
    customer_stripe_id, livemode, created, payload, status, attempts, error, received_at)
SELECT :event_id, :account_id, route.project_id, :type, :object_key, :customer_stripe_id,
    :livemode, :created,
    :payload, CASE WHEN route.project_id IS NULL THEN 'ignored' ELSE 'pending' END, 0,
    CASE WHEN route.project_id IS NULL THEN 'no project is connected to this account' END,
    :received_at
FROM (SELECT (SELECT project_id FROM stripe_connections
              WHERE active_account_id = :account_id) AS project_id) AS route
WHERE true
ON CONFLICT (event_id) DO NOTHING
RETURNING id, project_id
""").bindparams(bindparam("livemode", type_=Boolean()),
                bindparam("received_at", type_=UTCDateTime()))


MAX_BODY = 1024 * 1024      # Stripe's events are far smaller; more is not Stripe
FUTURE_SKEW = 60            # seconds a signature's timestamp may be ahead of our clock


def _signed_in_future(header: str | None) -> bool:
    """A ``t=`` ahead of our clock: the SDK checks only age, so a signature made for the
    future would stay replayable for as long as it is ahead."""
    for part in (header or "").split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit() and int(value) > time.time() + FUTURE_SKEW:
            return True
    return False


def _shape_error(event: Any) -> str | None:
    """What makes ``event`` not a Stripe event we can store (a 400, never a 5xx)."""
    if not isinstance(event, dict):
        return "not a Stripe event"
    checks = (("id", str, 255), ("type", str, 100))
    for key, kind, size in checks:
        value = event.get(key)
        if not isinstance(value, kind) or not 0 < len(value) <= size:
            return f"'{key}' must be a string of 1 to {size} characters"
    account = event.get("account")
    if account is not None and (not isinstance(account, str) or not 0 < len(account) <= 64):
        return "'account' must be an account id"
    created = event.get("created", 0)
    if isinstance(created, bool) or not isinstance(created, int) or not 0 <= created < 2**31:
        return "'created' must be a Unix timestamp"
    if not isinstance(event.get("livemode", False), bool):
        return "'livemode' must be a boolean"
    data = event.get("data", {})
    if not isinstance(data, dict) or not isinstance(data.get("object", {}), dict) \
            or not isinstance(data.get("previous_attributes", {}) or {}, dict):
        return "'data' must be an object with an object 'object'"
    return None


@bp.post("/integrations/stripe/webhook")
def receive():
    """One endpoint for every connected account (the event's ``account`` names it)."""
    if (request.content_length or 0) > MAX_BODY:
        return _reply(413, error=f"body larger than {MAX_BODY} bytes")
    payload = request.stream.read(MAX_BODY + 1)
    if len(payload) > MAX_BODY:
        return _reply(413, error=f"body larger than {MAX_BODY} bytes")
    secrets = webhook_secrets()
    if not secrets:
        log.error("STRIPE_WEBHOOK_SECRET is not set: refusing webhooks")
        return _reply(503, error="webhook endpoint not configured")
    if not verify(payload, request.headers.get("Stripe-Signature"), secrets,
                  int(current_app.config["STRIPE_WEBHOOK_TOLERANCE"])):
        return _reply(400, error="invalid or missing Stripe-Signature")
    if _signed_in_future(request.headers.get("Stripe-Signature")):
        return _reply(400, error="Stripe-Signature timestamp is in the future")
    try:
        event = json.loads(payload)
        problem = _shape_error(event)
        object_key = None if problem else mapping.event_object_key(event)[:200]
    except (ValueError, TypeError, AttributeError, RecursionError):
        return _reply(400, error="body is not a JSON Stripe event")
    if problem:
        return _reply(400, error=problem)
    if b"\\u0000" in payload:  # no database stores NUL in text; Stripe never sends one
        return _reply(400, error="NUL characters are not accepted")
    account = event.get("account")
    try:
        # One statement, autocommitted: durable when it returns, in one round trip.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            row = conn.execute(STORE_EVENT, {
                "event_id": event["id"], "account_id": account, "type": event["type"][:100],
                "object_key": object_key,
                "customer_stripe_id": mapping.event_customer_key(event),
                "livemode": bool(event.get("livemode")),
                "created": int(event.get("created") or 0),
                "payload": payload.decode("utf-8"), "received_at": utcnow()}).first()
    except SQLAlchemyError:
        log.exception("webhook %s not stored; answering 503 so Stripe retries", event["id"])
        return _reply(503, error="temporarily unavailable")
    row_id, project_id = row if row is not None else (None, None)
    if row_id is None:
        return _reply(200, received=True, duplicate=True)
    if project_id is None:
        log.info("webhook %s for unknown or disconnected account %s ignored", event["id"],
                 account)
        return _reply(200, received=True, ignored=True)
    try:
        request_drain(project_id)
    except Exception:  # the queue is down: the sweeper asks again later
        log.exception("webhook %s stored but its drain not enqueued", event["id"])
    return _reply(200, received=True)
