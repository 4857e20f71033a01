"""Applying a batch of inbox events at once, with the same outcome as one by one.

A month-end burst is thousands of charges, invoices and subscription updates of
customers we already know. Applied one at a time, each costs a transaction and ~18
statements (link, stored copy, twin check, event, derived events, traits, after-commit
queries). Here a batch of such events costs a handful of statements: the customers'
links in one query, their mirrored objects in one, one upsert per object kind (newest
data wins, as ``events._mirror``), the events in one ``record_events`` (idempotent on
Stripe's event id; twins decided as ``events._is_twin`` does, in batch order), traits
recomputed once per touched customer, automations told once (after commit).

Only what ``events._apply_event`` does for these events is done, in the same order:
each event sees the mirror as the events before it in the batch left it (an in-memory
overlay of the customers' subscriptions and charges), so derived lifecycle events and
the twin rule come out as they would one by one. Events this module does not handle
(customer and dispute events, deauthorisations, test data of a live account) are
``SLOW``: the drain applies them alone, with ``events.apply_event``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import stripe
from flask import current_app
from sqlalchemy import ColumnElement, func, select, text

from crowdpower.plugins.stripe import events as single
from crowdpower.plugins.stripe import lifecycle, mapping, store
from crowdpower.plugins.stripe.connection import Connection
from crowdpower.plugins.stripe.models import StripeCustomerLink, StripeObject, StripeWebhookEvent
from crowdpower.services import NewEvent, among, db, record_events, utcnow

SLOW = "slow"
MIRRORED = ("subscription", "charge")


def plan(conn: Connection | None, event: dict) -> tuple[str, str | None] | str | None:
    """How a batch treats ``event``: an outcome without any work (``(status, note)``),
    ``SLOW`` (applied alone), or None (applied in the batch)."""
    refused = single.refusal(conn, event)
    if refused is not None:
        return refused
    assert conn is not None
    type_ = event.get("type")
    obj = mapping.event_object(event)
    if type_ == "account.application.deauthorized" or obj.get("object") in (
            "customer", "dispute") or (conn.livemode and not event.get("livemode")):
        return SLOW
    if conn.status == "reconnect_needed":
        return "ignored", "reconnect needed: Stripe access was refused"
    if mapping.event_name(event) is None and obj.get("object") not in MIRRORED:
        return "ignored", f"{type_} is not used"
    if not mapping.event_customer_id(event):
        return "ignored", "the event names no customer"
    return None


@dataclass
class _Row:
    id: int
    object_key: str | None
    created: int
    received: datetime | None = None
    status: str = "pending"


@dataclass
class _Batch:
    """What the batch knows of the database, kept current as its events are applied."""

    project_id: int
    conn: Connection
    customers: dict[str, int | None | str] = field(default_factory=dict)
    stripe_ids: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    synced: dict[tuple[str, str], datetime] = field(default_factory=dict)
    fetched: dict[tuple[str, str], datetime | None] = field(default_factory=dict)
    objects: dict[str, dict[tuple[str, str], dict]] = field(
        default_factory=lambda: defaultdict(dict))  # by Stripe customer: (kind, id) → data
    staged: dict[tuple[str, str], tuple[dict, datetime, bool]] = field(default_factory=dict)
    products: set[str] = field(default_factory=set)
    versions: list[tuple[dict, datetime, bool]] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    prices: dict[str, dict] = field(default_factory=dict)
    rows: dict[int, _Row] = field(default_factory=dict)
    by_key: dict[str, list[_Row]] = field(default_factory=lambda: defaultdict(list))
    by_prefix: dict[str, list[_Row]] = field(default_factory=lambda: defaultdict(list))
    twins: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    records: list[NewEvent] = field(default_factory=list)
    touched: set[int] = field(default_factory=set)
    culprit: int | None = None  # the row being applied (a failure is its)


def apply_batch(project_id: int, conn: Connection, items: list[tuple[StripeWebhookEvent, dict]],
                reads: Reads | None = None, waiting: dict[int, Wait] | None = None,
                waited: dict[int, datetime | None] | None = None
                ) -> dict[int, tuple[str, str | None]]:
    """Apply events (rows locked by the caller, in order) in the current transaction;
    ``{row id: (status, note)}``. Raises whatever a look-up or write raises: the caller
    rolls back and applies the batch's events one by one.

    With ``reads`` (``prefetch``), an event that needs its object read from Stripe is
    not applied now: the read is started in the background and the event, with its
    customer's later events, is left out of the outcomes (it stays pending, for a later
    batch that finds the copy read; ``waiting`` gets ``{row id: Wait}``). Without, the
    read is made here, in line. ``waited``: rows that have waited for a read already (not
    again: read in line if still needed), with when the request was sent for those whose
    read this drain started after claiming them (the copy it wrote, or a later one read,
    shows their change)."""
    b = _Batch(project_id, conn)
    waited = waited or {}
    verdicts = {}
    for row, event in items:
        received = row.received_at
        if waited.get(row.id) is not None:
            # ``needs_fetch`` then asks for a copy read no earlier than that request.
            received = waited[row.id] - single.CLOCK_MARGIN - timedelta(microseconds=1)
        b.rows[row.id] = mine = _Row(row.id, row.object_key, row.created, received)
        b.by_key[mine.object_key or ""].append(mine)
        b.by_prefix[_prefix(mine.object_key or "")].append(mine)
        verdicts[row.id] = plan(conn, event)
        assert verdicts[row.id] != SLOW, "the drain applies slow events alone"
    work = [(row, event) for row, event in items if verdicts[row.id] is None]
    outcomes: dict[int, tuple[str, str | None]] = {}
    try:
        if work:
            _load(b, work)
        later = _defer_reads(b, work, reads, waited) if work and reads is not None else {}
        if waiting is not None:
            waiting.update(later)
        for row, event in items:  # in order: each event sees what the ones before it did
            if row.id in later:
                continue  # stays pending (so it counts for the twin rule's question)
            verdict = verdicts[row.id]
            b.culprit = row.id
            outcome = _apply(b, row, event) if verdict is None else verdict
            outcomes[row.id] = outcome  # type: ignore[assignment]
            b.rows[row.id].status = outcome[0]  # type: ignore[index]
        b.culprit = None
        if work:
            _write(b)
    except Exception as exc:
        raise BatchFailed(b.culprit) from exc
    return outcomes


class Reads(Protocol):
    """Reads of objects from Stripe made in the background (``prefetch.Prefetcher``)."""

    def wait_for(self, project_id: int, conn: Connection, kind: str, stripe_id: str,
                 received: datetime | None) -> str:
        """Whether an event received at ``received`` should wait for a background read
        of this object: ``"started"`` (by this call), ``"waiting"`` (another drain's, or
        landed since the batch looked), or ``""``: read it in line (the last background
        read failed)."""
        ...


@dataclass(frozen=True)
class Wait:
    """What a row left pending waits for: the background read of ``kind``/``stripe_id``
    (its own object's, or the one its customer's earlier event waits for), and whether
    this drain started that read for this row (``own``)."""

    kind: str
    stripe_id: str
    own: bool = False


def _defer_reads(b: _Batch, work: list[tuple[StripeWebhookEvent, dict]], reads: Reads,
                 waited: dict[int, datetime | None]) -> dict[int, Wait]:
    """The rows to leave pending for a background read: each event that ``needs_fetch``
    (as ``_mirror`` will decide, with the batch's earlier events applied), and every later
    event of its customer (a customer's events are applied in order). A subscription
    carrying discount ids is read in line: its event's properties need the whole object,
    and the mirror keeps a compact copy."""
    synced = dict(b.synced)
    fetched = dict(b.fetched)
    waiting: dict[int, Wait] = {}  # customer → the read its events wait for
    later: dict[int, Wait] = {}
    for row, event in work:
        customer_id = b.customers.get(mapping.event_customer_id(event) or "")
        if not isinstance(customer_id, int):
            continue  # ignored when applied: nothing to read
        if customer_id in waiting:
            # Behind its customer's earlier event. A read this drain started now, of the
            # same object, was sent after this row was claimed too: it covers this one.
            first = waiting[customer_id]
            obj = mapping.event_object(event)
            later[row.id] = Wait(first.kind, first.stripe_id, own=first.own and (
                obj.get("object"), obj.get("id")) == (first.kind, first.stripe_id))
            continue
        obj = mapping.event_object(event)
        kind = obj.get("object")
        if kind not in MIRRORED or not obj.get("id") or single.carries_discount_ids(obj):
            continue
        key = (kind, obj["id"])
        occurred = datetime.fromtimestamp(int(event.get("created") or 0), UTC)
        stored = synced.get(key)
        me = b.rows[row.id]
        if single.needs_fetch(obj, stored, fetched.get(key), occurred, me.received):
            state = "" if row.id in waited else reads.wait_for(
                b.project_id, b.conn, kind, obj["id"], me.received)
            if state:
                waiting[customer_id] = later[row.id] = Wait(kind, obj["id"],
                                                            own=state == "started")
                continue
            synced[key] = fetched[key] = utcnow()  # read in line by ``_mirror``
        elif stored is None or stored <= occurred:
            synced[key], fetched[key] = occurred, None
    return later


class BatchFailed(Exception):
    """Applying a batch raised (``__cause__``); ``row_id`` is the event it was applying,
    None if the failure was the batch's (a shared read or write)."""

    def __init__(self, row_id: int | None) -> None:
        super().__init__(row_id)
        self.row_id = row_id


def _load(b: _Batch, work: list[tuple[StripeWebhookEvent, dict]]) -> None:
    """Links, stored copies, mirrored objects, product names, tiered prices, twins."""
    p = b.project_id
    events = [e for _r, e in work]
    first: dict[str, int] = {}
    for row, event in work:
        first.setdefault(mapping.event_customer_id(event) or "", row.id)
    wanted = sorted(first)
    b.customers.update(dict(db.session.execute(select(
        StripeCustomerLink.stripe_customer_id, StripeCustomerLink.customer_id).where(
        StripeCustomerLink.project_id == p,
        among(StripeCustomerLink.stripe_customer_id, wanted))).all()))
    for stripe_customer in sorted(set(wanted) - set(b.customers), key=first.__getitem__):
        b.culprit = first[stripe_customer]  # a failing look-up is its first event's
        b.customers[stripe_customer] = _resolve(b, stripe_customer)
    b.culprit = None
    customer_ids = sorted({c for c in b.customers.values() if isinstance(c, int)})
    if customer_ids:
        # Locked (in one order, so two batches cannot deadlock): a drain beside this one
        # applying events of the same customers waits for this commit, then reads the
        # mirror with these events in it; traits are never computed from a stale copy.
        for cus, customer_id in db.session.execute(select(
                StripeCustomerLink.stripe_customer_id, StripeCustomerLink.customer_id).where(
                StripeCustomerLink.project_id == p,
                among(StripeCustomerLink.customer_id, customer_ids))
                .order_by(StripeCustomerLink.id).with_for_update()):
            b.stripe_ids[customer_id].add(cus)
    owners = sorted({s for ids in b.stripe_ids.values() for s in ids})
    for sid, cus, data in db.session.execute(select(
            StripeObject.stripe_id, StripeObject.customer_stripe_id, StripeObject.data).where(
            StripeObject.project_id == p, among(StripeObject.customer_stripe_id, owners),
            StripeObject.kind == "subscription")) if owners else []:
        b.objects[cus][("subscription", sid)] = data
    # Charges only matter to a charge event's recovery rule (``lifecycle._recovery``):
    # those customers' charges, with the fields the rule reads (a history grows with
    # every payment; decoding it whole was most of a batch's reading).
    paying = {b.customers.get(mapping.event_customer_id(e) or "") for e in events
              if e.get("type") in RECOVERY_TYPES}
    payers = sorted({s for c in paying if isinstance(c, int) for s in b.stripe_ids[c]})
    for sid, cus, data in db.session.execute(select(
            StripeObject.stripe_id, StripeObject.customer_stripe_id, _recovery_fields()).where(
            StripeObject.project_id == p, among(StripeObject.customer_stripe_id, payers),
            StripeObject.kind == "charge")) if payers else []:
        b.objects[cus][("charge", sid)] = data
    keys = {(o["object"], o["id"]) for e in events
            if (o := mapping.event_object(e)).get("object") in MIRRORED and o.get("id")}
    for kind in MIRRORED:
        ids = sorted(i for k, i in keys if k == kind)
        if ids:
            for sid, at, fetched_at in db.session.execute(select(
                    StripeObject.stripe_id, StripeObject.synced_at, StripeObject.fetched_at)
                    .where(StripeObject.project_id == p, StripeObject.kind == kind,
                           among(StripeObject.stripe_id, ids))):
                b.synced[(kind, sid)] = at
                b.fetched[(kind, sid)] = fetched_at
    subs = [d for objs in b.objects.values() for (k, _i), d in objs.items()
            if k == "subscription"]
    subs += [o for e in events for o in (mapping.event_object(e), lifecycle.previous_state(e))
             if o.get("object") == "subscription"]
    product_ids = {p_ for sub in subs for item in mapping.items_of(sub)
                   if isinstance(p_ := mapping.price_of(item).get("product"), str)}
    if product_ids:
        for sid, data in db.session.execute(select(StripeObject.stripe_id, StripeObject.data)
                                            .where(StripeObject.project_id == p,
                                                   StripeObject.kind == "product",
                                                   among(StripeObject.stripe_id,
                                                         sorted(product_ids)))):
            b.products.add(sid)
            if data and data.get("name"):
                b.names[sid] = data["name"]
    b.prices.update(store.tiered_prices(p, subs))
    _load_twins(b, events)


RECOVERY_TYPES = ("charge.succeeded", "charge.failed")
RECOVERY_FIELDS = ("id", "created", "status", "currency", "payment_intent", "amount",
                   "failure_code")


def _recovery_fields() -> ColumnElement:
    """What ``lifecycle._recovery`` reads of a customer's other charges (absent ones read
    None), built in PostgreSQL; SQLite reads the stored copy whole."""
    if db.engine.dialect.name != "postgresql":
        return StripeObject.data
    return func.jsonb_build_object(*(part for key in RECOVERY_FIELDS
                                     for part in (key, StripeObject.data[key])),
                                   type_=StripeObject.data.type)


def _resolve(b: _Batch, stripe_customer: str) -> int | None | str:
    """A customer without a link: fetched and linked (``events.resolve_customer``); the
    reason as a string when it cannot be read."""
    try:
        return single.resolve_customer(b.project_id, b.conn, stripe_customer)
    except single.CannotRead as exc:
        return str(exc)


def _load_twins(b: _Batch, events: list[dict]) -> None:
    """Processed rows outside the batch with the object key of a batch event that is
    recorded (the twin rule's first question; ``_is_twin`` asks the second when needed)."""
    keys = sorted({row.object_key for row in b.rows.values() if row.object_key})
    if not keys:
        return
    if db.engine.dialect.name == "postgresql":
        rows = db.session.execute(_TWINS_BY_KEY, {
            "project_id": b.project_id, "keys": keys, "ids": list(b.rows)})
        for row_id, key, created in rows:
            b.twins[key].append((row_id, created))
        return
    t = StripeWebhookEvent
    for start in range(0, len(keys), 1000):
        for row_id, key, created in db.session.execute(select(t.id, t.object_key, t.created)
                                                       .where(
                t.project_id == b.project_id, among(t.object_key, keys[start:start + 1000]),
                t.status == "processed", t.id.not_in(list(b.rows)))):
            b.twins[key].append((row_id, created))


# One index probe per object key. Asked as ``object_key = ANY(:keys)``, PostgreSQL planned
# from the inbox's statistics, which a burst leaves stale for a minute (516 rows estimated
# for the project, 159,064 there): it intersected the project and status indexes and read
# 20,000 heap pages, 80-320 ms a batch. A look-up per key (the lateral subquery, kept
# apart by OFFSET 0 so it is not turned back into a join) is one index probe each: 5 ms.
_TWINS_BY_KEY = text("""
SELECT e.id, e.object_key, e.created
FROM unnest(CAST(:keys AS text[])) AS k(key)
CROSS JOIN LATERAL (
  SELECT id, object_key, created FROM stripe_webhook_events
  WHERE project_id = :project_id AND object_key = k.key AND status = 'processed'
  OFFSET 0
) AS e
WHERE e.id <> ALL(CAST(:ids AS bigint[]))
""")


def _apply(b: _Batch, row: StripeWebhookEvent, event: dict) -> tuple[str, str | None]:
    """``events._apply_event`` from the customer on, against the batch's state."""
    occurred = datetime.fromtimestamp(int(event.get("created") or 0), UTC)
    obj = mapping.event_object(event)
    name = mapping.event_name(event)
    stripe_customer = mapping.event_customer_id(event)
    assert stripe_customer
    customer_id = b.customers.get(stripe_customer)
    if isinstance(customer_id, str):
        return "ignored", customer_id
    if customer_id is None:
        return "ignored", f"customer {stripe_customer} not found in Stripe"
    if obj.get("object") in MIRRORED:
        completed = _mirror(b, obj, occurred, b.rows[row.id].received)
        if completed is not None:
            event = {**event, "data": {**(event.get("data") or {}), "object": completed}}
            obj = completed
    status: tuple[str, str | None] = ("processed", None)
    if name is not None:
        if _is_twin(b, row):
            status = ("duplicate", "same change as an event processed moments ago")
        else:
            if obj.get("object") == "subscription":
                event = {**event, "data": {**(event.get("data") or {}), "object":
                                           mapping.with_prices(obj, _prices(b, [obj]))}}
            names = b.names if obj.get("object") == "subscription" else {}
            b.records.append(NewEvent(customer_id, name,
                                      mapping.event_properties(event, names),
                                      occurred_at=occurred, source="stripe",
                                      external_id=event["id"]))
            _derive(b, customer_id, event, occurred)
    b.touched.add(customer_id)
    return status


def _mirror(b: _Batch, obj: dict, occurred: datetime, received: datetime | None
            ) -> dict | None:
    """``events._mirror``: the stored copy is the batch's, the write is staged."""
    kind = obj["object"]
    key = (kind, obj["id"])
    stored = b.synced.get(key)
    ids_only = single.carries_discount_ids(obj)
    fetched = False
    if single.needs_fetch(obj, stored, b.fetched.get(key), occurred, received):
        params = {"expand": single.FETCH_EXPAND[kind]} if single.FETCH_EXPAND[kind] else {}
        sent = utcnow()
        try:
            fresh = single.read(b.conn, f"/v1/{kind}s/{obj['id']}", **params)
        except single.CannotRead:
            fresh = None
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise
        if fresh is not None:
            obj, occurred, fetched = fresh, sent, True
        else:
            ids_only = False
    elif stored is not None and stored >= occurred:
        return None  # the stored copy, read after this event arrived, is at least as new
    if kind == "subscription":
        _ensure_products(b, obj)
        _ensure_tiers(b, obj)
    for product in store.expanded_products([obj]) if kind == "subscription" else []:
        b.products.add(product["id"])  # mirrored with the subscription (``upsert_pages``)
        if product.get("name"):
            b.names[product["id"]] = product["name"]
    if kind == "subscription":
        b.versions.append((obj, occurred, fetched))  # its expanded products, whatever
    if stored is None or stored <= occurred:  # the upsert's guard: not older wins
        b.synced[key] = occurred
        b.fetched[key] = occurred if fetched else None
        b.staged[key] = (obj, occurred, fetched)
        cus = store.customer_id_of(obj)
        for objs in b.objects.values():
            objs.pop(key, None)
        if cus:
            b.objects[cus][key] = store.compact(kind, obj)
    return obj if ids_only else None


def _ensure_products(b: _Batch, sub: dict) -> None:
    wanted = {p for p in (mapping.price_of(i).get("product") for i in mapping.items_of(sub))
              if isinstance(p, str)}
    for product_id in sorted(wanted - b.products):
        try:
            product = single.read(b.conn, f"/v1/products/{product_id}")
        except (stripe.InvalidRequestError, single.CannotRead):
            continue
        store.upsert_objects(b.project_id, "product", [product], utcnow(), fetched=True)
        b.products.add(product_id)
        if product.get("name"):
            b.names[product_id] = product["name"]


def _ensure_tiers(b: _Batch, sub: dict) -> None:
    wanted = {p["id"] for p in map(mapping.price_of, mapping.items_of(sub))
              if p.get("billing_scheme") == "tiered" and not p.get("tiers") and p.get("id")}
    for price_id in sorted(wanted - set(b.prices)):
        try:
            price = single.read(b.conn, f"/v1/prices/{price_id}", expand=["tiers"])
        except (stripe.InvalidRequestError, single.CannotRead):
            continue
        store.upsert_objects(b.project_id, "price", [price], utcnow(), fetched=True)
        b.prices[price_id] = store.compact("price", price)


def _prices(b: _Batch, subs: list[dict]) -> dict[str, dict]:
    """``store.tiered_prices`` of these subscriptions, from the batch's copy."""
    ids = {p["id"] for sub in subs for item in mapping.items_of(sub)
           if (p := mapping.price_of(item)).get("billing_scheme") == "tiered"
           and not p.get("tiers") and p.get("id")}
    return {i: b.prices[i] for i in ids if i in b.prices}


def _is_twin(b: _Batch, row: StripeWebhookEvent) -> bool:
    """``events._is_twin``, with the batch's rows at the status they have reached."""
    window = int(current_app.config["STRIPE_DEDUPE_WINDOW_SECONDS"])
    me = b.rows[row.id]
    key = me.object_key or ""
    low, high = me.created - window, me.created + window
    found = [(i, c) for i, c in b.twins.get(key, []) if low <= c <= high]
    found += [(r.id, r.created) for r in b.by_key.get(key, [])
              if r.id != me.id and r.status == "processed" and low <= r.created <= high]
    if not found:
        return False
    _twin_id, twin_created = max(found)
    prefix = _prefix(key)
    low, high = sorted((twin_created, me.created))
    for r in b.by_prefix.get(prefix, []):
        if r.id != me.id and r.object_key != key and (r.object_key or "").startswith(prefix) \
                and r.status in ("processed", "pending", "retry") and low <= r.created <= high:
            return False
    events = StripeWebhookEvent
    between = db.session.scalar(select(events.id).where(
        events.project_id == b.project_id,
        single.same_object(prefix),
        events.object_key != key, events.id.not_in(list(b.rows)),
        events.status.in_(("processed", "pending", "retry")),
        events.created.between(low, high)).limit(1))
    return between is None


def _prefix(object_key: str) -> str:
    """The object part of an object key (``type:id:``), as ``events._is_twin`` cuts it."""
    return ":".join(object_key.split(":")[:2]) + ":"


def _derive(b: _Batch, customer_id: int, event: dict, occurred_at: datetime) -> None:
    """``derived.record_derived`` against the batch's overlay of the mirror."""
    subs: list[dict] = []
    charges: list[dict] = []
    for cus in b.stripe_ids.get(customer_id, ()):
        for (kind, _sid), data in b.objects.get(cus, {}).items():
            (subs if kind == "subscription" else charges).append(data)
    touched = subs + [mapping.event_object(event), lifecycle.previous_state(event)]
    prices = _prices(b, touched)
    if prices:
        subs = [mapping.with_prices(s, prices) for s in subs]
        event = lifecycle.with_prices(event, prices)
    for derived in lifecycle.derive(event, subs, charges, b.names):
        b.records.append(NewEvent(customer_id, derived.name, derived.properties,
                                  occurred_at=occurred_at, source="stripe",
                                  external_id=lifecycle.external_id(event, derived)))


def _write(b: _Batch) -> None:
    """The staged mirror writes, the events, the traits: a few statements in all."""
    for kind in MIRRORED:
        for read in (False, True):
            pages = [([obj], at) for (k, _i), (obj, at, fetched) in b.staged.items()
                     if k == kind and fetched is read]
            if pages:
                store.upsert_pages(b.project_id, kind, pages, fetched=read)
    # Every version's products, as ``store.upsert_objects`` does, even if older (one write
    # per origin: read from the API or taken from an event)
    for read in (False, True):
        store.upsert_products(b.project_id, [([sub], at) for sub, at, fetched in b.versions
                                             if fetched is read], fetched=read)
    record_events(b.project_id, b.records)
    store.recompute_traits(b.project_id, b.touched)
