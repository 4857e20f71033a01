"""The Connect webhook endpoint, its durable inbox, and the processing job.

Receiving does the least that makes an event safe: verify the signature on the raw
body, store the raw event (unique on its id; one autocommitted statement that also
routes it to its project), ask for that project's inbox to be drained, answer 2xx. The
ask is ``jobs.enqueue_once``: a burst of a thousand events costs a thousand Redis
``SET NX`` and one queued ``drain_inbox`` job, not a thousand jobs, and a tenant never
has more than one drain waiting, so its burst cannot queue ahead of other tenants.
If the queue is down the row waits in the inbox and ``sweep_inbox`` (a periodic job)
asks again later; if the database is down we answer 503 so Stripe retries. Processing
routes the event by its ``account`` to the project connected to that account, and never
touches another project's data.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from flask import current_app, g, jsonify, request
from sqlalchemy import Boolean, bindparam, or_, select, text
from sqlalchemy.exc import SQLAlchemyError

from crowdpower import jobs
from crowdpower.customers import record_event
from crowdpower.extensions import db
from crowdpower.models import UTCDateTime, utcnow
from crowdpower.plugins.stripe import mapping, store
from crowdpower.plugins.stripe.blueprint import bp
from crowdpower.plugins.stripe.client import AccountClient, MissingPermission, account_client
from crowdpower.plugins.stripe.derived import record_derived
from crowdpower.plugins.stripe.models import (
    StripeConnection,
    StripeCustomerLink,
    StripeObject,
    StripeWebhookEvent,
)
from crowdpower.plugins.stripe.ratelimit import limiter, rate_for
from crowdpower.tenancy import current_project_id, project_scope

log = logging.getLogger(__name__)
QUEUE = "webhooks"
MAX_ATTEMPTS = 5


def _reply(status: int, **body: Any):
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
    livemode, created, payload, status, attempts, error, received_at)
SELECT :event_id, :account_id, route.project_id, :type, :object_key, :livemode, :created,
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


def request_drain(project_id: int) -> str | None:
    """Make sure a ``drain_inbox`` job for this project is waiting (at most one is)."""
    return jobs.enqueue_once(drain_inbox, key=f"stripe:drain:{project_id}", queue=QUEUE,
                             project_id=project_id, retries=2)


def sweep_inbox() -> int:
    """Periodic job: drain projects whose stored events were never processed, and
    re-schedule retries whose job was lost. Returns the number of rows concerned."""
    cfg = current_app.config
    now = utcnow()
    fresh = now - timedelta(seconds=int(cfg["STRIPE_SWEEP_AFTER_SECONDS"]))
    stale = now - timedelta(seconds=10 * int(cfg["STRIPE_SWEEP_AFTER_SECONDS"]))
    rows = db.session.execute(select(
        StripeWebhookEvent.id, StripeWebhookEvent.project_id, StripeWebhookEvent.status,
        StripeWebhookEvent.attempts).where(
        StripeWebhookEvent.status.in_(("pending", "retry")),
        StripeWebhookEvent.project_id.is_not(None),
        StripeWebhookEvent.received_at < fresh,
        or_(StripeWebhookEvent.enqueued_at.is_(None), StripeWebhookEvent.enqueued_at < stale),
    ).order_by(StripeWebhookEvent.id).limit(5000)).all()
    # A plain enqueue, not ``enqueue_once``: a lost job's key may not have expired yet,
    # and a second drain of the same inbox is harmless (rows are claimed SKIP LOCKED).
    for project_id in sorted({p for _i, p, status, _a in rows if status == "pending"}):
        jobs.enqueue(drain_inbox, queue=QUEUE, project_id=project_id, retries=2)
    for row_id, project_id, status, attempts in rows:
        if status == "retry":
            _schedule_retry(row_id, project_id, attempts)
    if rows:
        db.session.execute(StripeWebhookEvent.__table__.update().where(
            StripeWebhookEvent.id.in_([row_id for row_id, *_ in rows])).values(enqueued_at=now))
    db.session.commit()
    if rows:
        log.info("inbox sweep: %d events of %d projects", len(rows),
                 len({p for _i, p, *_ in rows}))
    return len(rows)


# -- processing ---------------------------------------------------------------------

def drain_inbox() -> int:
    """Job: apply this project's pending events, oldest first, for one time slice.

    Rows are claimed ``FOR UPDATE SKIP LOCKED`` one at a time, each applied and committed
    in its own transaction, so several workers can drain one busy project side by side
    (a drain that starts on a backlog asks for a helper) and a crash loses nothing (the
    row stays pending). After
    ``STRIPE_WEBHOOK_DRAIN_SECONDS`` the job asks for another drain and returns: it joins
    the back of the queue, behind other tenants' work. A failing event is marked
    ``retry`` and re-tried by its own delayed ``process_event`` job, with backoff,
    without holding up the events behind it. Returns the number of rows handled.
    """
    project_id = current_project_id()
    assert project_id is not None
    deadline = time.monotonic() + float(current_app.config["STRIPE_WEBHOOK_DRAIN_SECONDS"])
    handled = 0
    while True:
        row = db.session.scalar(select(StripeWebhookEvent).where(
            StripeWebhookEvent.project_id == project_id,
            StripeWebhookEvent.status == "pending").order_by(StripeWebhookEvent.id)
            .limit(1).with_for_update(skip_locked=True))
        if row is None:
            db.session.commit()
            return handled
        row_id = row.id
        if handled == 0 and _more_pending(project_id, row_id):
            # A backlog: ask for a helper. It will do the same as it starts, so every
            # free worker joins in, one queued job at a time (others' jobs interleave).
            request_drain(project_id)
        handled += 1
        try:
            _process_row(project_id, row)
        except _Retry as retry:
            _schedule_retry(row_id, project_id, retry.attempts)
        if time.monotonic() >= deadline:
            request_drain(project_id)
            return handled


def _more_pending(project_id: int, claimed: int) -> bool:
    return db.session.scalar(select(StripeWebhookEvent.id).where(
        StripeWebhookEvent.project_id == project_id, StripeWebhookEvent.status == "pending",
        StripeWebhookEvent.id > claimed).limit(1)) is not None


def _schedule_retry(row_id: int, project_id: int, attempts: int) -> None:
    intervals = list(current_app.config["JOB_RETRY_INTERVALS"]) or [0]
    delay = intervals[min(max(attempts - 1, 0), len(intervals) - 1)]
    jobs.enqueue(process_event, row_id, queue=QUEUE, project_id=project_id, delay=delay,
                 retries=0)


def process_event(inbox_id: int) -> str:
    """Job: apply one stored event now (a retry); reschedules itself with backoff."""
    project_id = current_project_id()
    assert project_id is not None
    row = db.session.scalar(select(StripeWebhookEvent).where(
        StripeWebhookEvent.id == inbox_id, StripeWebhookEvent.project_id == project_id)
        .with_for_update())
    if row is None or row.status not in ("pending", "retry"):
        return row.status if row is not None else "missing"
    try:
        return _process_row(project_id, row)
    except _Retry as retry:
        _schedule_retry(inbox_id, project_id, retry.attempts)
        return "retry"


class _Retry(Exception):
    def __init__(self, attempts: int) -> None:
        super().__init__(attempts)
        self.attempts = attempts


def _process_row(project_id: int, row: StripeWebhookEvent) -> str:
    """Apply one stored event, its row locked by the caller (idempotent). On error:
    attempts and error recorded, the row marked ``retry`` (``failed`` after
    ``MAX_ATTEMPTS``) and ``_Retry`` raised."""
    inbox_id = row.id
    _prepare_client(project_id)  # a token refresh commits: do it before this row writes
    row.attempts = (row.attempts or 0) + 1
    attempts = row.attempts
    try:
        with project_scope(project_id):
            status, note = apply_event(project_id, row, json.loads(row.payload))
    except Exception as exc:
        db.session.rollback()
        if getattr(exc, "http_status", None) == 429:  # "slow down" is not a failure
            attempts -= 1
        final = attempts >= MAX_ATTEMPTS
        db.session.execute(StripeWebhookEvent.__table__.update().where(
            StripeWebhookEvent.id == inbox_id).values(
            attempts=attempts, error=f"{type(exc).__name__}: {exc}"[:2000],
            status="failed" if final else "retry", enqueued_at=utcnow()))
        db.session.commit()
        if final:
            log.exception("webhook row %s failed for good", inbox_id)
            return "failed"
        log.warning("webhook row %s failed (attempt %d), retrying later: %s", inbox_id,
                    attempts, exc)
        raise _Retry(max(attempts, 1)) from exc
    row.status, row.error, row.processed_at = status, note, utcnow()
    db.session.commit()
    return status


@dataclass(frozen=True)
class Connection:
    """What applying an event needs of the project's connection (no secrets)."""

    status: str
    stripe_user_id: str | None
    livemode: bool
    accept_test_data: bool
    kind: str = "connect"
    test_data: bool = False  # this event's objects are test-mode ones of a live account


def _connection(project_id: int) -> Connection | None:
    """The project's connection, read once per job: a drain applies many events."""
    cache = g.setdefault("stripe_connections", {})
    if project_id not in cache:
        row = db.session.execute(select(
            StripeConnection.status, StripeConnection.stripe_user_id,
            StripeConnection.livemode, StripeConnection.accept_test_data,
            StripeConnection.kind).where(
            StripeConnection.project_id == project_id)).first()
        cache[project_id] = Connection(row[0], row[1], bool(row[2]), bool(row[3]),
                                       row[4] or "connect") if row is not None else None
    return cache[project_id]


def accepts(conn: Connection | StripeConnection, livemode: bool) -> bool:
    """Live connections take live events (and test events if the tenant opted in)."""
    if livemode == bool(conn.livemode):
        return True
    return bool(conn.livemode) and not livemode and bool(conn.accept_test_data)


def _client(project_id: int, conn: Connection) -> AccountClient:
    """The look-up client of the connection (one per job: its token is reused)."""
    cache = g.setdefault("stripe_clients", {})
    if project_id not in cache:
        cache[project_id] = account_client(project_id, conn=conn)
    return cache[project_id]


def _prepare_client(project_id: int) -> None:
    """Refresh an App connection's access token if due, while nothing is written yet.

    On SQLite the refresh (its own connection and transaction) could not commit while this
    job's session holds the write lock; problems surface again in the look-up itself.
    """
    from crowdpower.plugins.stripe.tokens import ReconnectNeeded, TokenEndpointError

    with db.session.no_autoflush:
        conn = _connection(project_id)
    if conn is None or conn.kind != "app" or conn.status != "connected":
        return
    try:
        _client(project_id, conn).prepare()
    except (ReconnectNeeded, TokenEndpointError, OSError, RuntimeError):
        pass


def apply_event(project_id: int, row: StripeWebhookEvent,
                event: dict) -> tuple[str, str | None]:
    """``(status, note)``: processed, ignored or duplicate.

    A look-up that finds Stripe access gone (refresh token refused) or a permission
    missing leaves the event ``ignored`` with the reason: retrying cannot help, and the
    card tells the tenant what to do.
    """
    from crowdpower.plugins.stripe.tokens import ReconnectNeeded

    try:
        return _apply_event(project_id, row, event)
    except ReconnectNeeded as exc:
        db.session.rollback()
        g.pop("stripe_connections", None)
        g.pop("stripe_clients", None)
        return "ignored", f"reconnect needed: {exc}"
    except MissingPermission as exc:
        db.session.rollback()
        with project_scope(project_id):
            db.session.execute(StripeConnection.__table__.update().where(
                StripeConnection.project_id == project_id).values(last_error=str(exc)))
        return "ignored", str(exc)


def _apply_event(project_id: int, row: StripeWebhookEvent,
                 event: dict) -> tuple[str, str | None]:
    conn = _connection(project_id)
    account = event.get("account")
    if conn is None or conn.status not in ("connected", "reconnect_needed") \
            or conn.stripe_user_id != account:
        return "ignored", "the account is not connected to this project"
    livemode = bool(event.get("livemode"))
    if not accepts(conn, livemode):
        return "ignored", ("test-mode event on a live connection" if not livemode
                           else "live event on a test-mode connection")
    type_ = event["type"]
    if type_ == "account.application.deauthorized":
        from crowdpower.plugins.stripe.connect import mark_disconnected

        mark_disconnected(project_id, "Access to the Stripe account was revoked in Stripe.")
        g.pop("stripe_connections", None)
        return "processed", "disconnected"
    if conn.livemode and not livemode:
        conn = replace(conn, test_data=True)  # reads need the platform's test key
    if conn.status == "reconnect_needed":
        return "ignored", "reconnect needed: Stripe access was refused"
    occurred = datetime.fromtimestamp(int(event.get("created") or 0), UTC)
    obj = mapping.event_object(event)
    if obj.get("object") == "customer":
        return _customer_event(project_id, type_, obj, occurred)
    if obj.get("object") == "dispute":
        return _dispute_event(project_id, conn, obj, occurred)
    name = mapping.event_name(event)
    if name is None and obj.get("object") not in ("subscription", "charge"):
        return "ignored", f"{type_} is not used"
    stripe_customer = mapping.event_customer_id(event)
    if not stripe_customer:
        return "ignored", "the event names no customer"
    try:
        customer_id = resolve_customer(project_id, conn, stripe_customer)
    except CannotRead as exc:
        return "ignored", str(exc)
    if customer_id is None:
        return "ignored", f"customer {stripe_customer} not found in Stripe"
    if obj.get("object") in ("subscription", "charge"):
        completed = _mirror(project_id, conn, obj, occurred)
        if completed is not None:  # the event carried discount ids: props from the objects
            event = {**event, "data": {**(event.get("data") or {}), "object": completed}}
            obj = completed
    status: tuple[str, str | None] = ("processed", None)
    if name is not None:
        if _is_twin(project_id, row):
            status = ("duplicate", "same change as an event processed moments ago")
        else:
            if obj.get("object") == "subscription":
                event = {**event, "data": {**(event.get("data") or {}), "object":
                                           mapping.with_prices(obj, store.tiered_prices(
                                               project_id, [obj]))}}
            record_event(project_id, customer_id, name,
                         mapping.event_properties(event, _product_names(project_id, obj)),
                         occurred_at=occurred, source="stripe", external_id=event["id"])
            # Lifecycle events (upgrade, churn, recovery…) derived from this change.
            record_derived(project_id, customer_id, event, occurred)
    store.recompute_traits(project_id, [customer_id])
    return status


FETCH_EXPAND = {"subscription": ["items.data.price.product", "discounts.source.coupon"],
                "charge": []}


def _mirror(project_id: int, conn: Connection, obj: dict, occurred: datetime) -> dict | None:
    """Store the event's object, unless we hold data as new: then ask Stripe for the current.

    Stripe does not order deliveries, and timestamps are whole seconds: an event no newer
    than the stored copy may describe an older state, so the object is re-fetched. A
    subscription whose ``discounts`` are ids (as webhook payloads carry them) is fetched
    with its discounts expanded, since MRR needs the coupons; that object is returned.
    """
    kind = obj["object"]
    stored = store.stored_synced_at(project_id, kind, obj["id"])
    ids_only = kind == "subscription" and any(isinstance(d, str)
                                              for d in obj.get("discounts") or [])
    if ids_only or (stored is not None and stored >= occurred):
        path = f"/v1/{kind}s/{obj['id']}"
        params = {"expand": FETCH_EXPAND[kind]} if FETCH_EXPAND[kind] else {}
        try:
            fresh = read(conn, path, **params)
        except CannotRead:
            fresh = None  # test data without a test key: the event's copy is all we have
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise
        if fresh is not None:
            obj, occurred = fresh, utcnow()
        else:
            ids_only = False
    if kind == "subscription":
        _ensure_products(project_id, conn, obj)
        _ensure_tiers(project_id, conn, obj)
    store.upsert_objects(project_id, kind, [obj], occurred)
    return obj if ids_only else None


def _dispute_event(project_id: int, conn: Connection, obj: dict,
                   occurred: datetime) -> tuple[str, str | None]:
    """``charge.dispute.*``: mirror the dispute (a lost one reduces lifetime spend). Its
    payload names the charge by id; the dispute is read with the charge expanded, for the
    customer."""
    try:
        dispute = read(conn, f"/v1/disputes/{obj['id']}", expand=["charge"])
    except CannotRead as exc:
        return "ignored", str(exc)
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            return "ignored", f"dispute {obj['id']} not found in Stripe"
        raise
    stripe_customer = store.customer_id_of(dispute)
    if not stripe_customer:
        return "ignored", "the disputed charge names no customer (a guest charge)"
    customer_id = resolve_customer(project_id, conn, stripe_customer)
    if customer_id is None:
        return "ignored", f"customer {stripe_customer} not found in Stripe"
    store.upsert_objects(project_id, "dispute", [dispute], utcnow())
    store.recompute_traits(project_id, [customer_id])
    return "processed", None


def _customer_event(project_id: int, type_: str, obj: dict,
                    occurred: datetime) -> tuple[str, str | None]:
    if type_ == "customer.deleted":
        obj = {**obj, "deleted": True}
    store.upsert_objects(project_id, "customer", [obj], occurred)
    linked = store.link_customers(project_id, [obj]) if not obj.get("deleted") else {}
    customer_id = linked.get(obj["id"]) or db.session.scalar(select(
        StripeCustomerLink.customer_id).where(StripeCustomerLink.project_id == project_id,
                                              StripeCustomerLink.stripe_customer_id == obj["id"]))
    if customer_id is not None:
        store.recompute_traits(project_id, [customer_id])
    return "processed", None


def _is_twin(project_id: int, row: StripeWebhookEvent) -> bool:
    """Another event of the same change was already recorded within the dedupe window,
    and no other change of that object came in between (A→B, B→A, A→B are three real
    changes, even though the first and the last look alike)."""
    window = int(current_app.config["STRIPE_DEDUPE_WINDOW_SECONDS"])
    events = StripeWebhookEvent
    twin = db.session.execute(select(events.id, events.created).where(
        events.project_id == project_id, events.object_key == row.object_key,
        events.id != row.id, events.status == "processed",
        events.created.between(row.created - window, row.created + window),
    ).order_by(events.id.desc()).limit(1)).first()
    if twin is None:
        return False
    obj = ":".join((row.object_key or "").split(":")[:2]) + ":"
    low, high = sorted((twin.created, row.created))
    between = db.session.scalar(select(events.id).where(
        events.project_id == project_id, events.object_key.startswith(obj, autoescape=True),
        events.object_key != row.object_key, events.id != row.id,
        events.status.in_(("processed", "pending", "retry")),
        events.created.between(low, high)).limit(1))
    return between is None


def resolve_customer(project_id: int, conn: Connection, stripe_customer: str) -> int | None:
    """The CrowdPower customer of a Stripe customer: linked, else fetched and upserted."""
    linked = db.session.scalar(select(StripeCustomerLink.customer_id).where(
        StripeCustomerLink.project_id == project_id,
        StripeCustomerLink.stripe_customer_id == stripe_customer))
    if linked is not None:
        return linked
    try:
        customer = read(conn, f"/v1/customers/{stripe_customer}")
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            return None
        raise
    if customer.get("deleted"):
        return None
    store.upsert_objects(project_id, "customer", [customer], utcnow())
    return store.link_customers(project_id, [customer]).get(stripe_customer)


class CannotRead(Exception):
    """A look-up we cannot make: said in the event's note, never taken for a 404."""


def read(conn: Connection, path: str, **params: Any) -> dict:
    """GET one object for a webhook: through the account's rate limiter (shared with syncs),
    with the platform's test key for test-mode objects of a live account."""
    if conn.test_data and not current_app.config.get("STRIPE_TEST_SECRET_KEY"):
        raise CannotRead("test-mode data on a live connection: not looked up in Stripe "
                         "(set STRIPE_TEST_SECRET_KEY to read it)")
    if conn.test_data and conn.kind == "app":
        raise CannotRead("test-mode data on a live Stripe App install: not looked up (install "
                         "the App in test mode to read test data)")
    limiter(current_app._get_current_object()).wait(  # type: ignore[attr-defined]
        conn.stripe_user_id or "", rate_for(current_app.config, conn.livemode
                                            and not conn.test_data))
    project_id = current_project_id()
    assert project_id is not None
    found = _client(project_id, conn).get(path, test_data=conn.test_data, **params)
    return json.loads(json.dumps(found))


def _ensure_products(project_id: int, conn: Connection, sub: dict) -> None:
    """Fetch (once) the products a subscription's prices name, for plan names."""
    wanted = {p for p in (mapping.price_of(i).get("product") for i in mapping.items_of(sub))
              if isinstance(p, str)}
    if not wanted:
        return
    known = set(db.session.scalars(select(StripeObject.stripe_id).where(
        StripeObject.project_id == project_id, StripeObject.kind == "product",
        StripeObject.stripe_id.in_(wanted))))
    for product_id in sorted(wanted - known):
        try:
            product = read(conn, f"/v1/products/{product_id}")
        except (stripe.InvalidRequestError, CannotRead):
            continue
        store.upsert_objects(project_id, "product", [product], utcnow())


def _ensure_tiers(project_id: int, conn: Connection, sub: dict) -> None:
    """Fetch (once) the tiered prices a subscription uses, with their ``tiers`` (Stripe
    leaves them out of embedded prices), into the mirror."""
    wanted = {p["id"] for p in map(mapping.price_of, mapping.items_of(sub))
              if p.get("billing_scheme") == "tiered" and not p.get("tiers") and p.get("id")}
    if not wanted:
        return
    known = set(store.tiered_prices(project_id, [sub]))
    for price_id in sorted(wanted - known):
        try:
            price = read(conn, f"/v1/prices/{price_id}", expand=["tiers"])
        except (stripe.InvalidRequestError, CannotRead):
            continue
        store.upsert_objects(project_id, "price", [price], utcnow())


def _product_names(project_id: int, obj: dict) -> dict[str, str]:
    if obj.get("object") != "subscription":
        return {}
    return store.product_names(project_id, [obj])
