"""The Stripe mirror, customer links and trait recomputation shared by webhooks and sync.

Traits are always a pure function (``mapping.customer_traits``) of the mirrored
Stripe objects linked to a CrowdPower customer, so whichever path (sync page or
webhook) wrote last, the result is the same and the newest data wins.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Text, cast, select, text
from sqlalchemy.dialects import postgresql, sqlite

from crowdpower import services
from crowdpower.plugins.stripe import mapping
from crowdpower.plugins.stripe.models import StripeCustomerLink, StripeObject
from crowdpower.services import ExternalCustomer, among, bulk_set_traits, db

SOURCE = "stripe"

_CUSTOMER_FIELDS = ("id", "object", "email", "name", "created", "livemode", "currency",
                    "delinquent", "deleted", "metadata")
_CHARGE_FIELDS = ("id", "object", "customer", "amount", "amount_captured", "amount_refunded",
                  "currency", "status", "paid", "refunded", "captured", "created", "livemode",
                  "failure_code", "failure_message", "description", "payment_intent",
                  "disputed")
_SUB_FIELDS = ("id", "object", "customer", "status", "created", "currency", "quantity",
               "trial_start", "trial_end", "cancel_at_period_end", "cancel_at", "canceled_at",
               "ended_at", "cancellation_details", "livemode", "start_date", "discount",
               "discounts", "current_period_end", "current_period_start")
_PRICE_FIELDS = ("id", "object", "nickname", "unit_amount", "unit_amount_decimal", "currency",
                 "recurring", "product", "type", "billing_scheme", "tiers_mode", "tiers",
                 "transform_quantity")
_DISPUTE_FIELDS = ("id", "object", "amount", "currency", "status", "created", "livemode")


def customer_id_of(obj: dict) -> str | None:
    """The Stripe customer id an object belongs to (``customer`` may be expanded)."""
    if obj.get("object") == "customer":
        return obj.get("id")
    if obj.get("object") == "dispute" and isinstance(obj.get("charge"), dict):
        obj = obj["charge"]  # listed with ``expand[]=data.charge``
    customer = obj.get("customer")
    return customer.get("id") if isinstance(customer, dict) else customer


def _compact_price(price: Any) -> Any:
    if not isinstance(price, dict):
        return price
    out = {k: price[k] for k in _PRICE_FIELDS if k in price}
    product = price.get("product")
    if isinstance(product, dict):
        out["product"] = {"id": product.get("id"), "name": product.get("name"),
                          "object": "product"}
    return out


def compact(kind: str, obj: dict) -> dict:
    """Keep only the fields traits are computed from (the mirror stays small)."""
    if kind == "customer":
        return {k: obj[k] for k in _CUSTOMER_FIELDS if k in obj}
    if kind == "charge":
        return {k: obj[k] for k in _CHARGE_FIELDS if k in obj}
    if kind == "subscription":
        out = {k: obj[k] for k in _SUB_FIELDS if k in obj}
        out["customer"] = customer_id_of(obj)
        items = (obj.get("items") or {}).get("data") or []
        out["items"] = {"object": "list", "data": [
            {"id": i.get("id"), "object": "subscription_item", "quantity": i.get("quantity"),
             "current_period_start": i.get("current_period_start"),
             "current_period_end": i.get("current_period_end"),
             "price": _compact_price(i.get("price")), "plan": None}
            for i in items]}
        return out
    if kind == "product":
        return {"id": obj.get("id"), "object": "product", "name": obj.get("name")}
    if kind == "price":
        return _compact_price(obj)
    if kind == "dispute":
        out = {k: obj[k] for k in _DISPUTE_FIELDS if k in obj}
        charge = obj.get("charge")
        out["charge"] = charge.get("id") if isinstance(charge, dict) else charge
        out["customer"] = customer_id_of(obj)
        return out
    raise ValueError(f"unknown kind {kind!r}")


def expanded_products(subscriptions: Iterable[dict]) -> list[dict]:
    """Products expanded inside subscriptions' prices (kept for plan names)."""
    found = {}
    for sub in subscriptions:
        for item in (sub.get("items") or {}).get("data") or []:
            product = (item.get("price") or {}).get("product")
            if isinstance(product, dict) and product.get("id"):
                found[product["id"]] = product
    return list(found.values())


def _insert():
    return postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert


def upsert_objects(project_id: int, kind: str, objects: Iterable[dict],
                   synced_at: datetime, fetched: bool = False) -> int:
    """Write objects to the mirror unless the stored copy is newer (ordering guard).
    ``fetched``: read from Stripe's API at ``synced_at`` (else an event's copy)."""
    return upsert_pages(project_id, kind, [(list(objects), synced_at)], fetched=fetched)


def upsert_pages(project_id: int, kind: str, pages: list[tuple[list[dict], datetime]],
                 fresh: bool = False, fetched: bool = True) -> int:
    """Several fetched pages in one write, each object stamped with its page's fetch time.

    ``fresh``: the project had no objects of this kind when the phase began (an initial
    sync), so a large batch is COPYed straight into the mirror; if a webhook stored one
    of them meanwhile, the batch goes through the guarded upsert instead. ``fetched``:
    the pages were read from Stripe's API (``fetched_at`` = their time); False for the copies
    webhook events carry.
    """
    if kind == "subscription":
        upsert_products(project_id, pages, fetched=fetched)
    rows = {}
    for objects, synced_at in pages:
        for obj in objects:
            rows[obj["id"]] = {"project_id": project_id, "kind": kind, "stripe_id": obj["id"],
                               "customer_stripe_id": customer_id_of(obj),
                               "data": compact(kind, obj), "synced_at": synced_at,
                               "fetched_at": synced_at if fetched else None,
                               "deleted": bool(obj.get("deleted"))}
    listed = list(rows.values())

    def upsert() -> None:
        services.bulk_upsert(StripeObject.__table__, listed,
                             ["project_id", "kind", "stripe_id"],
                             ["customer_stripe_id", "data", "synced_at", "fetched_at",
                              "deleted"],
                             only_if_newer="synced_at")
    if fresh and services.copies(len(listed)):
        services.copy_or(StripeObject.__table__, listed, upsert)
    else:
        upsert()
    return len(listed)


def upsert_products(project_id: int, subscriptions: list[tuple[list[dict], datetime]],
                    fetched: bool = False) -> int:
    """The products expanded in these subscriptions (each with its time), in one write.

    The same result as one guarded upsert per subscription in order (a copy not older
    than the stored one wins, so of several copies of a product the last of the newest
    wins): that copy is picked here, and written once (in product order: two drains
    lock shared products in the same order).

    A product whose stored copy already holds the same data is left alone: a catalogue
    has a few products shared by every subscription, and rewriting them with each one
    (every subscription read from Stripe expands them) made those few rows the place
    where concurrent drains and reads queued for each other's locks. Its stored time
    then stays older than the copy skipped, which only lets an equal copy through."""
    newest: dict[str, tuple[dict, datetime]] = {}
    for objects, synced_at in subscriptions:
        for product in expanded_products(objects):
            kept = newest.get(product["id"])
            if kept is None or kept[1] <= synced_at:
                newest[product["id"]] = (product, synced_at)
    if not newest:
        return 0
    same = {sid for sid, data, deleted in db.session.execute(select(
        StripeObject.stripe_id, StripeObject.data, StripeObject.deleted).where(
        StripeObject.project_id == project_id, StripeObject.kind == "product",
        among(StripeObject.stripe_id, sorted(newest))))
        if data == compact("product", newest[sid][0])
        and bool(deleted) == bool(newest[sid][0].get("deleted"))}
    changed = sorted((sid, kept) for sid, kept in newest.items() if sid not in same)
    if not changed:
        return 0
    return upsert_pages(project_id, "product",
                        [([product], at) for _id, (product, at) in changed],
                        fetched=fetched)


def has_objects(project_id: int, kind: str) -> bool:
    """Whether the mirror holds any object of this kind for the project."""
    return db.session.scalar(select(StripeObject.stripe_id).where(
        StripeObject.project_id == project_id, StripeObject.kind == kind).limit(1)) is not None


def stored_stamps(project_id: int, kind: str, stripe_id: str
                  ) -> tuple[datetime | None, datetime | None]:
    """``(synced_at, fetched_at)`` of the stored copy; ``(None, None)`` if there is none."""
    row = db.session.execute(select(StripeObject.synced_at, StripeObject.fetched_at).where(
        StripeObject.project_id == project_id, StripeObject.kind == kind,
        StripeObject.stripe_id == stripe_id)).first()
    return (row[0], row[1]) if row is not None else (None, None)


def link_customers(project_id: int, stripe_customers: list[dict]) -> dict[str, int]:
    """CrowdPower customer id for each Stripe customer: existing link, else email, else new.

    Matching by email ignores case; several Stripe customers with one email share one
    CrowdPower customer; customers without email get their own. Deleted ones are skipped.
    """
    live = [c for c in stripe_customers if not c.get("deleted")]
    ids = [c["id"] for c in live]
    linked = dict(db.session.execute(select(
        StripeCustomerLink.stripe_customer_id, StripeCustomerLink.customer_id).where(
        StripeCustomerLink.project_id == project_id,
        among(StripeCustomerLink.stripe_customer_id, ids))).all()) if ids else {}
    todo = [c for c in live if c["id"] not in linked]
    if not todo:
        return linked
    now = services.utcnow()
    linked.update(services.match_or_create(project_id, [ExternalCustomer(
        key=c["id"], email=c.get("email"), name=c.get("name"),
        created_at=datetime.fromtimestamp(c["created"], UTC) if c.get("created") else None)
        for c in todo]))
    new_links = [{"project_id": project_id, "stripe_customer_id": c["id"],
                  "customer_id": linked[c["id"]], "created_at": now} for c in todo]
    stmt = _insert()(StripeCustomerLink.__table__).on_conflict_do_nothing(
        index_elements=["project_id", "stripe_customer_id"])
    if services.copies(len(new_links)):  # unless a webhook linked one of them meanwhile
        services.copy_or(StripeCustomerLink.__table__, new_links,
                         lambda: db.session.connection().execute(stmt, new_links))
    else:
        db.session.connection().execute(stmt, new_links)
    return linked


def product_names(project_id: int, subscriptions: Iterable[dict]) -> dict[str, str]:
    """Names of the products that subscriptions name by id only (from the mirror)."""
    ids = {p for sub in subscriptions for item in (sub.get("items") or {}).get("data") or []
           if isinstance(p := (item.get("price") or {}).get("product"), str)}
    if not ids:
        return {}
    rows = db.session.execute(select(StripeObject.stripe_id, StripeObject.data).where(
        StripeObject.project_id == project_id, StripeObject.kind == "product",
        StripeObject.stripe_id.in_(sorted(ids))))
    return {sid: data.get("name") for sid, data in rows if data and data.get("name")}


def tiered_prices(project_id: int, subscriptions: Iterable[dict]) -> dict[str, dict]:
    """Mirrored prices (listed with their ``tiers``) of subscriptions' tiered items, whose
    embedded prices Stripe sends without tiers."""
    ids = {p["id"] for sub in subscriptions for item in mapping.items_of(sub)
           if (p := mapping.price_of(item)).get("billing_scheme") == "tiered"
           and not p.get("tiers") and p.get("id")}
    if not ids:
        return {}
    rows = db.session.execute(select(StripeObject.stripe_id, StripeObject.data).where(
        StripeObject.project_id == project_id, StripeObject.kind == "price",
        StripeObject.stripe_id.in_(sorted(ids))))
    return {sid: data for sid, data in rows if data}


def recompute_traits(project_id: int, customer_ids: Iterable[int]) -> int:
    """Recompute the ``stripe_*`` traits of these CrowdPower customers from the mirror."""
    rows = compute_traits(project_id, customer_ids)
    bulk_set_traits(project_id, rows, source=SOURCE)
    return len(rows)


def compute_traits(project_id: int, customer_ids: Iterable[int],
                   owners: dict[str, int] | None = None) -> list[tuple[int, dict[str, Any]]]:
    """``(customer id, traits)`` of these customers, computed from the mirror (written by
    the caller: the sync writes one batch while it computes the next). ``owners`` gets
    their Stripe customers (Stripe id → customer id).

    Charges are summed up where they are stored (``charge_summaries``): a customer's
    history grows with every payment, and reading it whole made each event cost more."""
    customer_ids = sorted(set(customer_ids))
    if not customer_ids:
        return []
    links = db.session.execute(select(
        StripeCustomerLink.stripe_customer_id, StripeCustomerLink.customer_id).where(
        StripeCustomerLink.project_id == project_id,
        among(StripeCustomerLink.customer_id, customer_ids))).all()
    owner = dict(links)
    if owners is not None:
        owners.update(owner)
    grouped: dict[int, dict[str, list]] = defaultdict(
        lambda: {"customer": [], "subscription": [], "charge": [], "dispute": []})
    in_sql = db.engine.dialect.name == "postgresql"
    kinds = ["customer", "subscription", "dispute"] + ([] if in_sql else ["charge"])
    stripe_ids = list(owner)
    for start in range(0, len(stripe_ids), 1000):
        chunk = stripe_ids[start:start + 1000]
        # The document as text, parsed by orjson: the driver's json.loads took most of
        # the traits phase's read (2.3 s of 10k customers' ≈ 66k objects).
        for kind, cus, data in _owned_objects(project_id, chunk, kinds, in_sql):
            grouped[owner[cus]][kind].append(orjson.loads(data))
    summaries = charge_summaries(project_id, customer_ids) if in_sql else {
        c: mapping.summarize_charges(g["charge"]) for c, g in grouped.items()}
    subs = [s for g in grouped.values() for s in g["subscription"]]
    names = product_names(project_id, subs)
    prices = tiered_prices(project_id, subs)
    rows_out = []
    for customer_id in customer_ids:
        g = grouped.get(customer_id)
        if not g or not [c for c in g["customer"] if not c.get("deleted")]:
            continue
        traits = mapping.traits_of(
            g["customer"], [mapping.with_prices(s, prices) for s in g["subscription"]],
            summaries.get(customer_id) or mapping.ChargeSummary(), names,
            disputes=g["dispute"])
        rows_out.append((customer_id, traits))
    return rows_out


_OWNED = ("SELECT kind, customer_stripe_id, data::text FROM stripe_objects "
          "WHERE project_id = %s AND customer_stripe_id = ANY(%s) AND kind = ANY(%s)")


def _owned_objects(project_id: int, stripe_ids: list[str], kinds: list[str],
                   in_sql: bool) -> Iterable[tuple[str, str, str]]:
    """``(kind, Stripe customer, data as JSON text)`` of these customers' objects. On
    PostgreSQL straight from the driver's cursor: SQLAlchemy's per-row processing was a
    tenth of the sync's traits thread (≈ 2 objects a customer)."""
    if in_sql:
        raw = db.session.connection().connection.driver_connection
        with raw.cursor() as cur:
            cur.execute(_OWNED, (project_id, stripe_ids, kinds))
            return cur.fetchall()
    return db.session.execute(select(StripeObject.kind, StripeObject.customer_stripe_id,
                                     cast(StripeObject.data, Text)).where(
        StripeObject.project_id == project_id,
        among(StripeObject.customer_stripe_id, stripe_ids),
        StripeObject.kind.in_(kinds))).tuples().all()


# ``mapping.summarize_charges`` in SQL (PostgreSQL), per CrowdPower customer: the same
# filters, amounts (``captured_net``), currencies (lower-cased, "" when none) and order
# (created, then id by code point: COLLATE "C").
_CHARGES = """
WITH c AS (
  SELECT l.customer_id AS cid, o.data AS data, o.data->>'status' AS status,
         o.data->>'status' = 'succeeded'
           AND (o.data->'captured') IS DISTINCT FROM 'false'::jsonb AS succ,
         lower(coalesce(o.data->>'currency', '')) AS cur,
         coalesce((o.data->>'created')::numeric, 0) AS created,
         coalesce(o.data->>'id', '') COLLATE "C" AS oid,
         trunc(coalesce((o.data->>'amount')::numeric, 0)) AS amount,
         trunc((o.data->>'amount_captured')::numeric) AS amount_captured,
         trunc(coalesce((o.data->>'amount_refunded')::numeric, 0)) AS amount_refunded
  FROM stripe_customer_links l
  JOIN stripe_objects o ON o.project_id = l.project_id
   AND o.customer_stripe_id = l.stripe_customer_id AND o.kind = 'charge'
  WHERE l.project_id = :project_id AND l.customer_id = ANY(:ids)
), n AS (
  SELECT *, greatest(0, amount_refunded - (amount - coalesce(amount_captured, amount)))
            AS refunded
  FROM c
)
"""
# One statement: the join above is made once (a CTE read twice is materialized), its rows
# read for the totals of each currency and for the newest succeeded charge of each customer
# (one with a currency, one without), told apart by the first column. Two statements made
# the join twice per batch.
_SUMMARY = text(_CHARGES + """
SELECT true, cid, cur, count(*) FILTER (WHERE succ),
       coalesce(sum(coalesce(amount_captured, amount) - refunded) FILTER (WHERE succ), 0),
       coalesce(sum(refunded) FILTER (WHERE succ), 0),
       count(*) FILTER (WHERE status = 'failed'), max(created) FILTER (WHERE status = 'failed'),
       NULL::text COLLATE "C", NULL::jsonb
FROM n GROUP BY cid, cur
UNION ALL
(SELECT DISTINCT ON (cid, cur = '') false, cid, cur, NULL, NULL, NULL, NULL, created, oid,
        jsonb_build_object('id', data->'id', 'created', data->'created',
                           'amount', data->'amount', 'amount_captured', data->'amount_captured',
                           'currency', data->'currency')
 FROM n WHERE succ ORDER BY cid, cur = '', created DESC, oid DESC)
""")


def charge_summaries(project_id: int, customer_ids: list[int]
                     ) -> dict[int, mapping.ChargeSummary]:
    """``mapping.summarize_charges`` of each customer's mirrored charges, in PostgreSQL
    (one statement, a few rows a customer, whatever the length of their history)."""
    params = {"project_id": project_id, "ids": customer_ids}
    counts: dict[int, list] = defaultdict(lambda: [0, 0, None, {}])
    lasts: dict[int, list] = defaultdict(list)
    for total, cid, cur, succeeded, kept, refunded, failed, number, oid, last in \
            db.session.execute(_SUMMARY, params):
        if not total:  # the newest succeeded charge (``number``: its ``created``)
            lasts[cid].append(((number, oid), cur, last))
            continue
        entry = counts[cid]
        entry[0] += succeeded
        entry[1] += failed
        if number is not None:  # the newest failed charge's ``created``
            entry[2] = int(number) if entry[2] is None else max(entry[2], int(number))
        if succeeded:
            entry[3][cur] = (int(kept), int(refunded))
    out = {}
    for cid, (succeeded, failed, failed_at, totals) in counts.items():
        found = sorted(lasts.get(cid, []), key=lambda f: f[1] == "")  # as DISTINCT ON's order
        newest = max(found, key=lambda f: f[0]) if found else None
        paid = [cur for _o, cur, _l in found if cur]
        out[cid] = mapping.ChargeSummary(
            succeeded=succeeded, failed=failed, last_failed_at=failed_at,
            last=newest[2] if newest else None, last_paid_currency=paid[0] if paid else None,
            totals=totals)
    return out


def write_traits(project_id: int, rows: list[tuple[int, dict[str, Any]]]) -> None:
    """Store computed traits (``compute_traits``) as the Stripe source."""
    bulk_set_traits(project_id, rows, source=SOURCE)
