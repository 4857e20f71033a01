"""Reading objects from Stripe in the background while the drain applies other events.

An event no newer than the stored copy of its object needs the object read from Stripe
(``events.needs_fetch``). Read in line, each read waits for the account's rate cap (20/s
in test mode, 80/s live) while the drain holds its whole batch: in a 27,000-event burst,
218 reads left both workers idle for more than half the drain. Here the read is started
on a small thread pool and the event, with its customer's later events, stays pending;
the drain goes on with the other customers. The thread writes the copy to the mirror
with ``fetched_at`` (the read's time, after the event was received), so a later batch
applies the event without reading again, with the outcome an in-line read would give.

The drain that started a read knows it was sent after the event was claimed, hence
after Stripe had made the change: when the read has landed, the event is applied with the
copy it wrote (``fetched_at`` = when the request was sent), with no comparison of clocks.
Drains in other processes see a read under way through a Redis marker per object
(``busy``, then ``done:<when the request was sent>`` or ``failed``, for a minute): they
leave the event pending too instead of reading the object again, then apply it by the
usual rule (``events.needs_fetch``). An event waits for a background read once; if it
still needs a read after that (a newer event's copy replaced the one read), it is read in
line. A read that fails (any error: 404, access refused, a timeout) is marked ``failed``,
and the event is read in line, so every error has the outcome it has always had. Without
Redis, or on SQLite, there is no prefetcher and every read is made in line.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from flask import Flask, current_app
from redis import Redis
from sqlalchemy import any_, select
from sqlalchemy.dialects.postgresql import array

from crowdpower.plugins.stripe import events as single
from crowdpower.plugins.stripe import store
from crowdpower.plugins.stripe.connection import Connection
from crowdpower.plugins.stripe.models import StripeObject, StripeWebhookEvent
from crowdpower.services import among, db, project_scope, utcnow

log = logging.getLogger(__name__)

MARK_SECONDS = 60  # how long a marker lives (a read under way longer is presumed lost)
STARTED, WAITING = "started", "waiting"  # ``wait_for``: this drain's read, or another's


class Prefetcher:
    """``wait_for`` (``batch.Reads``) and ``ready`` for the drain; one per app."""

    def __init__(self, app: Flask, redis: Redis, threads: int) -> None:
        self.app = app
        self.redis = redis
        self.prefix = app.config.get("RQ_QUEUE_PREFIX", "")
        self.pool = ThreadPoolExecutor(max_workers=threads,
                                       thread_name_prefix="stripe-prefetch")

    def key(self, project_id: int, kind: str, stripe_id: str) -> str:
        return f"{self.prefix}crowdpower:stripe-prefetch:{project_id}:{kind}:{stripe_id}"

    def wait_for(self, project_id: int, conn: Connection, kind: str, stripe_id: str,
                 received: datetime | None) -> str:
        key = self.key(project_id, kind, stripe_id)
        if self.redis.set(key, "busy", nx=True, ex=MARK_SECONDS):
            self._start(key, project_id, conn, kind, stripe_id)
            return STARTED
        state = (self.redis.get(key) or b"").decode()
        if state == "busy":
            return WAITING  # another drain's read: the event waits for it
        if state.startswith("done:"):
            sent = datetime.fromtimestamp(float(state[5:]), UTC)
            if received is not None and sent > received + single.CLOCK_MARGIN:
                return WAITING  # landed after this batch looked: the next batch sees it
        if state == "failed":
            return ""  # read in line: its error is the event's outcome
        # A read sent before this event arrived: another one.
        self.redis.set(key, "busy", ex=MARK_SECONDS)
        self._start(key, project_id, conn, kind, stripe_id)
        return STARTED

    def landed(self, keys: list[str]) -> list[datetime | bool]:
        """Each marker's read: when its request was sent if it landed, True if it is
        over otherwise (failed, or the marker expired), False while it is under way."""
        out: list[datetime | bool] = []
        for state in self.redis.mget(keys) if keys else []:
            text = (state or b"").decode()
            out.append(False if text == "busy" else datetime.fromtimestamp(
                float(text[5:]), UTC) if text.startswith("done:") else True)
        return out

    def _start(self, key: str, project_id: int, conn: Connection, kind: str,
               stripe_id: str) -> None:
        self.pool.submit(self._read, key, project_id, conn, kind, stripe_id)

    def _read(self, key: str, project_id: int, conn: Connection, kind: str,
              stripe_id: str) -> None:
        """On a pool thread: read the object (as ``events._mirror`` does), write it to the
        mirror with its products and tiers, commit, then mark the key."""
        state = "failed"
        try:
            with self.app.app_context(), project_scope(project_id):
                try:
                    params = ({"expand": single.FETCH_EXPAND[kind]}
                              if single.FETCH_EXPAND[kind] else {})
                    sent = utcnow()
                    fresh = single.read(conn, f"/v1/{kind}s/{stripe_id}", **params)
                    if kind == "subscription":
                        single.ensure_catalogue(project_id, conn, fresh)
                    store.upsert_objects(project_id, kind, [fresh], sent, fetched=True)
                    db.session.commit()
                    state = f"done:{sent.timestamp()}"
                except Exception as exc:  # the in-line read will meet it again
                    db.session.rollback()
                    log.info("background read of %s %s failed (%s: %s): read in line",
                             kind, stripe_id, type(exc).__name__, exc)
        finally:
            self.redis.set(key, state, ex=MARK_SECONDS)


AHEAD = 2000  # pending rows a drain looks through for reads it will need


def read_ahead(project_id: int, conn: Connection, reads: Prefetcher,
               pending: Any, after: int = 0) -> tuple[int, int]:
    """Start now the reads the next pending events of a backlog will need.

    A read sent now covers every event of its object that arrived before it (a copy read
    after an event arrived shows its change): one read per object, however many of its
    events are pending, and started before the drain reaches them rather than when it
    does (at the account's rate cap, reads started late made a burst's last seconds wait
    for them). An object is read when one of its events will need it (``needs_fetch``):
    two of its events of the same second, or the stored copy as new as one of them. Only
    events that arrived more than ``CLOCK_MARGIN`` ago (a backlog): a read of a live
    event's object is started when the drain reaches it. ``pending`` selects the next
    pending rows in claim order (``inbox.PENDING``); ``after``: the last row looked at
    before (each row is looked at once). Returns the reads started and the last row
    looked at."""
    cutoff = utcnow() - single.CLOCK_MARGIN
    inbox = StripeWebhookEvent
    rows = db.session.execute(select(inbox.id, inbox.type, inbox.object_key, inbox.created,
                                     inbox.received_at).where(
        inbox.project_id == any_(array([project_id])), pending, inbox.id > after)
        .order_by(inbox.project_id, inbox.id).limit(AHEAD)).all()
    last_row = rows[-1][0] if rows else after
    seen: dict[tuple[str, str], list[tuple[int, object]]] = {}
    for _id, type_, key, created, received in rows:
        kind = ("subscription" if type_.startswith("customer.subscription.") else "charge"
                if type_.startswith("charge.") and not type_.startswith("charge.dispute.")
                else None)
        parts = (key or "").split(":")
        if kind is None or len(parts) < 2 or not parts[1]:
            continue
        seen.setdefault((kind, parts[1]), []).append((created, received))
    live = {k for k, found in seen.items() if any(r is None or r > cutoff for _c, r in found)}
    wanted = {k: found for k, found in seen.items() if k not in live}
    stored: dict[tuple[str, str], tuple] = {}
    with project_scope(project_id):
        for kind in ("subscription", "charge"):
            ids = sorted(i for k, i in wanted if k == kind)
            for sid, synced, fetched in db.session.execute(select(
                    StripeObject.stripe_id, StripeObject.synced_at, StripeObject.fetched_at)
                    .where(StripeObject.project_id == project_id, StripeObject.kind == kind,
                           among(StripeObject.stripe_id, ids))) if ids else []:
                stored[(kind, sid)] = (synced, fetched)
    db.session.commit()  # no transaction held while the reads start
    started = 0
    for (kind, sid), found in sorted(wanted.items()):
        last = max(r for _c, r in found)
        synced, fetched = stored.get((kind, sid), (None, None))
        if fetched is not None and fetched > last + single.CLOCK_MARGIN:
            continue  # read after all of them arrived already
        newest = synced  # what the stored copy will describe when each event comes up
        needed = False
        for created, _received in found:
            occurred = datetime.fromtimestamp(created, UTC)
            if newest is not None and newest >= occurred:
                needed = True
                break
            newest = occurred
        if not needed:
            continue  # each event newer than the copy before it: none needs a read
        if reads.wait_for(project_id, conn, kind, sid, last) == STARTED:
            started += 1
    return started, last_row


def prefetcher() -> Prefetcher | None:
    """The app's prefetcher: None without Redis, on SQLite, or when
    ``STRIPE_WEBHOOK_READ_THREADS`` is 0 (every read in line)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    found = app.extensions.get("crowdpower.stripe.prefetch", False)
    if found is False:
        threads = int(app.config.get("STRIPE_WEBHOOK_READ_THREADS") or 0)
        url = app.config.get("REDIS_URL")
        found = None
        if threads > 0 and url and db.engine.dialect.name == "postgresql":
            found = Prefetcher(app, Redis.from_url(url), threads)
        app.extensions["crowdpower.stripe.prefetch"] = found
    return found
