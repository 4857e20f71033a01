"""Applying one webhook event: route it, mirror its object, record the event.

Routes by ``event.account`` to the project connected to that account, checks
``livemode`` against the connection, finds the customer (linked, else fetched from
Stripe and matched through the host's services), mirrors the object (newest data wins),
records the event (idempotent on the Stripe event id; twins within the dedupe window
once), and recomputes the customer's traits.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from flask import current_app, g
from sqlalchemy import ColumnElement, and_, select

from crowdpower.plugins.stripe import mapping, store
from crowdpower.plugins.stripe.client import AccountClient, MissingPermission, account_client
from crowdpower.plugins.stripe.connect import mark_disconnected
from crowdpower.plugins.stripe.connection import Connection, accepts, forget, snapshot
from crowdpower.plugins.stripe.derived import record_derived
from crowdpower.plugins.stripe.models import (
    StripeConnection,
    StripeCustomerLink,
    StripeObject,
    StripeWebhookEvent,
)
from crowdpower.plugins.stripe.ratelimit import limiter, rate_for
from crowdpower.plugins.stripe.tokens import ReconnectNeeded
from crowdpower.services import current_project_id, db, project_scope, record_event, utcnow

__all__ = ["Connection", "accepts"]


def client_for(project_id: int, conn: Connection) -> AccountClient:
    """The look-up client of the connection (one per job: its token is reused)."""
    cache = g.setdefault("stripe_clients", {})
    if project_id not in cache:
        cache[project_id] = account_client(project_id, conn=conn)
    return cache[project_id]


def apply_event(project_id: int, row: StripeWebhookEvent,
                event: dict) -> tuple[str, str | None]:
    """``(status, note)``: processed, ignored or duplicate.

    A look-up that finds Stripe access gone (refresh token refused) or a permission
    missing leaves the event ``ignored`` with the reason: retrying cannot help, and the
    card tells the tenant what to do.
    """
    try:
        return _apply_event(project_id, row, event)
    except ReconnectNeeded as exc:
        db.session.rollback()
        forget()
        return "ignored", f"reconnect needed: {exc}"
    except MissingPermission as exc:
        db.session.rollback()
        with project_scope(project_id):
            db.session.execute(StripeConnection.__table__.update().where(
                StripeConnection.project_id == project_id).values(last_error=str(exc)))
        return "ignored", str(exc)


def refusal(conn: Connection | None, event: dict) -> tuple[str, str | None] | None:
    """``("ignored", why)`` when the connection does not take this event, else None."""
    if conn is None or conn.status not in ("connected", "reconnect_needed") \
            or conn.stripe_user_id != event.get("account"):
        return "ignored", "the account is not connected to this project"
    livemode = bool(event.get("livemode"))
    if not accepts(conn, livemode):
        return "ignored", ("test-mode event on a live connection" if not livemode
                           else "live event on a test-mode connection")
    return None


def _apply_event(project_id: int, row: StripeWebhookEvent,
                 event: dict) -> tuple[str, str | None]:
    conn = snapshot(project_id)
    refused = refusal(conn, event)
    if refused is not None:
        return refused
    assert conn is not None
    livemode = bool(event.get("livemode"))
    type_ = event["type"]
    if type_ == "account.application.deauthorized":
        mark_disconnected(project_id, "Access to the Stripe account was revoked in Stripe.")
        forget()
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
        completed = _mirror(project_id, conn, obj, occurred, row.received_at)
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


# Our own machines' clocks may differ a little: a read counts as after an event's receipt
# only if it is later by more than this.
CLOCK_MARGIN = timedelta(seconds=1)


def carries_discount_ids(obj: dict) -> bool:
    """A subscription whose ``discounts`` are ids, as webhook payloads carry them (MRR
    needs the coupons: it is read with them expanded)."""
    return obj.get("object") == "subscription" and any(
        isinstance(d, str) for d in obj.get("discounts") or [])


def needs_fetch(obj: dict, stored: datetime | None, fetched: datetime | None,
                occurred: datetime, received: datetime | None) -> bool:
    """Whether applying an event needs its object read from Stripe first.

    Stripe does not order deliveries, and timestamps are whole seconds: an event no newer
    than the stored copy (``stored``: the time that copy describes) may describe an older
    state, so the object is read again. Unless that copy was itself read from Stripe's API
    (``fetched``, our clock) after we received the event (``received``, our clock): the
    change the event describes had happened by then, so the copy shows it or a later
    state, and a read now would add nothing. A subscription whose ``discounts`` are ids
    (as webhook payloads carry them) is always read, with its discounts expanded: MRR needs
    the coupons, and the event's properties are taken from that object."""
    if carries_discount_ids(obj):
        return True
    if stored is None or stored < occurred:
        return False
    return not (fetched is not None and received is not None
                and fetched > received + CLOCK_MARGIN)


def _mirror(project_id: int, conn: Connection, obj: dict, occurred: datetime,
            received: datetime | None = None) -> dict | None:
    """Store the event's object, unless ``needs_fetch``: then ask Stripe for the current.
    A subscription read for its discounts is returned (the event's properties use it)."""
    kind = obj["object"]
    stored, fetched = store.stored_stamps(project_id, kind, obj["id"])
    ids_only = carries_discount_ids(obj)
    if needs_fetch(obj, stored, fetched, occurred, received):
        path = f"/v1/{kind}s/{obj['id']}"
        params = {"expand": FETCH_EXPAND[kind]} if FETCH_EXPAND[kind] else {}
        sent = utcnow()  # the copy shows every change made before the request was sent
        try:
            fresh = read(conn, path, **params)
        except CannotRead:
            fresh = None  # test data without a test key: the event's copy is all we have
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise
        if fresh is not None:
            if kind == "subscription":
                _ensure_products(project_id, conn, fresh)
                _ensure_tiers(project_id, conn, fresh)
            store.upsert_objects(project_id, kind, [fresh], sent, fetched=True)
            return fresh if ids_only else None
    elif stored is not None and stored >= occurred:
        return None  # the stored copy, read after this event arrived, is at least as new
    if kind == "subscription":
        _ensure_products(project_id, conn, obj)
        _ensure_tiers(project_id, conn, obj)
    store.upsert_objects(project_id, kind, [obj], occurred)
    return None


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
    store.upsert_objects(project_id, "dispute", [dispute], utcnow(), fetched=True)
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


def same_object(prefix: str) -> ColumnElement[bool]:
    """Inbox rows whose object key starts with ``prefix`` (``type:id:``), as an index
    range on PostgreSQL. ``LIKE :prefix`` is one only in a plan made for its value; the
    driver prepares a statement run often and PostgreSQL then plans it once for any value,
    as a scan of the whole inbox (20 ms at 80k rows, every twin check). The pattern
    operators compare bytes, like the index's ``text_pattern_ops``; ``type:id;`` is the
    first key past the prefix (``;`` follows ``:``)."""
    key = StripeWebhookEvent.object_key
    if db.engine.dialect.name != "postgresql":
        return key.startswith(prefix, autoescape=True)
    return and_(key.op("~>=~")(prefix), key.op("~<~")(prefix[:-1] + ";"))


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
        events.project_id == project_id, same_object(obj),
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
    store.upsert_objects(project_id, "customer", [customer], utcnow(), fetched=True)
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
    found = client_for(project_id, conn).get(path, test_data=conn.test_data, **params)
    return json.loads(json.dumps(found))


def ensure_catalogue(project_id: int, conn: Connection, sub: dict) -> None:
    """The products and tiered prices a subscription names, read and mirrored if missing
    (what ``_mirror`` does for a subscription it stores)."""
    _ensure_products(project_id, conn, sub)
    _ensure_tiers(project_id, conn, sub)


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
        store.upsert_objects(project_id, "product", [product], utcnow(), fetched=True)


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
        store.upsert_objects(project_id, "price", [price], utcnow(), fetched=True)


def _product_names(project_id: int, obj: dict) -> dict[str, str]:
    if obj.get("object") != "subscription":
        return {}
    return store.product_names(project_id, [obj])
