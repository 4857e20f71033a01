"""The durable inbox of webhook events: drain per project, retries, sweeper.

The endpoint asks for a drain with ``enqueue_once``: a burst of a thousand events costs
a thousand Redis ``SET NX`` and one queued ``drain_inbox`` job, not a thousand jobs, and
a tenant never has more than one drain waiting, so its burst cannot queue ahead of other
tenants. The drain applies pending rows a batch at a time (``batch``: one transaction
and a few statements for hundreds of events). A failing event is retried by its own
delayed job (``process_event``) with the inbox's retry policy, while the events behind
it go on.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import orjson
from flask import current_app
from sqlalchemy import Select, any_, bindparam, literal_column, or_, select, text
from sqlalchemy.dialects.postgresql import array

from crowdpower.plugins.stripe import batch, mapping, prefetch
from crowdpower.plugins.stripe.client import MissingPermission
from crowdpower.plugins.stripe.connection import snapshot
from crowdpower.plugins.stripe.events import apply_event, client_for
from crowdpower.plugins.stripe.metrics import EVENTS_APPLIED
from crowdpower.plugins.stripe.models import StripeWebhookEvent
from crowdpower.plugins.stripe.prefetch import Prefetcher, prefetcher
from crowdpower.plugins.stripe.queues import QUEUES
from crowdpower.plugins.stripe.tokens import ReconnectNeeded, TokenEndpointError
from crowdpower.services import (
    RetryPolicy,
    current_project_id,
    db,
    enqueue,
    enqueue_once,
    log_context,
    project_scope,
    setting,
    utcnow,
)

log = logging.getLogger(__name__)
QUEUE = QUEUES["webhooks"]
MAX_ATTEMPTS = 5


def request_drain(project_id: int) -> str | None:
    """Make sure a ``drain_inbox`` job for this project is waiting (at most one is)."""
    return enqueue_once(drain_inbox, key=f"stripe:drain:{project_id}", queue=QUEUE,
                             project_id=project_id, retries=2)


RETRYABLE = ("failed", "retry")


def retry_events(project_id: int, *, ids: tuple[int, ...] | list[int] | None = None,
                 event_ids: tuple[str, ...] | list[str] | None = None,
                 states: tuple[str, ...] = RETRYABLE, by: str = "the tenant"
                 ) -> list[tuple[int, str]]:
    """Apply a project's failed (or still retrying) events again, now: back to
    ``pending``, attempts start over, the last error kept in the note, and one drain of
    the project's inbox queued (the normal path, oldest first). The card's Retry, the
    failed-events page and ``crowdpower ops events retry`` all come here. ``ids`` (inbox
    rows) or ``event_ids`` (Stripe's ``evt_…``) narrow it down; rows of other projects
    are never touched. Returns ``(row id, event id)`` of the rows put back."""
    with project_scope(project_id):
        query = select(StripeWebhookEvent).where(
            StripeWebhookEvent.project_id == project_id,
            StripeWebhookEvent.status.in_(states))
        if ids is not None:
            query = query.where(StripeWebhookEvent.id.in_(list(ids)))
        if event_ids is not None:
            query = query.where(StripeWebhookEvent.event_id.in_(list(event_ids)))
        rows = db.session.scalars(query.order_by(StripeWebhookEvent.id)
                                  .with_for_update()).all()
        now = utcnow()
        for row in rows:
            row.status, row.attempts, row.enqueued_at = "pending", 0, now
            row.error = f"retried by {by} after: {row.error or ''}"[:2000]
        done = [(r.id, r.event_id) for r in rows]
        db.session.commit()
    if done:
        request_drain(project_id)
    return done


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
        enqueue(drain_inbox, queue=QUEUE, project_id=project_id, retries=2)
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


def drain_inbox() -> int:
    """Job: apply this project's pending events, oldest first, for one time slice.

    Rows are claimed ``FOR UPDATE SKIP LOCKED`` a batch at a time
    (``STRIPE_WEBHOOK_BATCH``) and applied together in one transaction (``batch``), so
    several workers can drain one busy project side by side (a drain that starts on a
    backlog asks for a helper) and a crash loses nothing (the rows stay pending). An
    event the batch does not handle (a customer or dispute event, a deauthorisation…) is
    applied alone, as before, in order. If a batch fails, it is rolled back and its
    events are applied one by one, so only a failing event is marked ``retry`` (and
    re-tried by its own delayed ``process_event`` job, with backoff) while the others are
    applied exactly once. After ``STRIPE_WEBHOOK_DRAIN_SECONDS`` the job asks for another
    drain and returns: it joins the back of the queue, behind other tenants' work.
    Returns the number of rows handled.
    """
    project_id = current_project_id()
    assert project_id is not None
    deadline = time.monotonic() + float(current_app.config["STRIPE_WEBHOOK_DRAIN_SECONDS"])
    size = max(1, int(current_app.config.get("STRIPE_WEBHOOK_BATCH") or 1))
    reads = prefetcher()
    waiting: dict[int, batch.Wait] = {}  # rows left pending for a background read
    waited: dict[int, datetime | None] = {}  # ... whose read is over (``apply_batch``)
    handled = idle = 0
    ahead_at = ahead_row = 0  # rows handled when it last looked ahead, and how far
    while True:
        if reads is not None and handled >= ahead_at:
            ahead_row = _read_ahead(project_id, reads, ahead_row)
            ahead_at = handled + AHEAD_EVERY
        if waiting and reads is not None:
            _forget_reads(project_id, reads, waiting, waited)
        rows = list(db.session.scalars(claim(project_id, size, skip=list(waiting))))
        if not rows:
            db.session.commit()
            if waiting and time.monotonic() < deadline:
                time.sleep(READ_PAUSE)  # only events waiting for their reads are left
                continue
            if waiting:
                request_drain(project_id)
            return handled
        if handled == 0 and len(rows) == size and _more_pending(project_id, rows[-1].id):
            # A backlog: ask for a helper. It will do the same as it starts, so every
            # free worker joins in, one queued job at a time (others' jobs interleave).
            request_drain(project_id)
        before = len(waiting)
        with _collector_paused():
            applied = _apply_claimed(project_id, rows, reads, waiting, waited)
        handled += applied
        idle = 0 if applied or len(waiting) > before else idle + 1
        if idle >= BUSY_ROUNDS:
            # Every customer left is another drain's, for a while now: it goes on. One
            # drain is queued, should that one have looked for more just before this
            # one let its rows go.
            request_drain(project_id)
            return handled
        if idle:  # what it claimed is another drain's now: give that one a moment
            time.sleep(BUSY_PAUSE)
        if time.monotonic() >= deadline:
            request_drain(project_id)
            return handled


# The claim reads the partial inbox index, whatever the statistics say: a plan for it must
# not depend on them. The driver prepares a statement it runs often, and PostgreSQL may then
# use one plan for any value (a generic plan):
# - ``status = 'pending'`` is written in the statement, not sent as a parameter: a plan for
#   any status cannot use the index, whose predicate is this literal;
# - the project is compared with ``= ANY`` and the rows ordered by (project, id): an
#   equality would let the primary key supply the order, and PostgreSQL takes that plan
#   when it expects pending rows spread evenly among processed ones. An inbox is a queue
#   (the processed rows come first): that plan read every processed row of the inbox on
#   each claim (27,000 filtered out, 8-57 ms); with statistics taken while the inbox was
#   empty (one row estimated) it sorted every pending row instead (on disk, 60 ms a
#   claim). Only the inbox index gives this order.
PENDING = StripeWebhookEvent.status == literal_column("'pending'")


def claim(project_id: int, size: int, skip: list[int] | None = None) -> Select:
    """The next ``size`` pending rows of the project no other drain holds, locked
    (but for ``skip``: rows waiting for a background read)."""
    inbox = StripeWebhookEvent
    project = (inbox.project_id == any_(array([project_id]))
               if db.engine.dialect.name == "postgresql" else inbox.project_id == project_id)
    query = select(inbox).where(project, PENDING)
    if skip:
        query = query.where(inbox.id.not_in(skip))
    return (query.order_by(inbox.project_id, inbox.id)
            .limit(size).with_for_update(skip_locked=True))


READ_PAUSE = 0.02  # seconds between looks at reads under way, when nothing else is left
AHEAD_EVERY = prefetch.AHEAD // 2  # rows applied between two looks ahead


def _read_ahead(project_id: int, reads: Prefetcher, after: int) -> int:
    """``prefetch.read_ahead`` on a backlog, from the row after ``after``; the last row
    looked at. Never fails the drain: a read not started ahead is started when the drain
    reaches its event."""
    conn = snapshot(project_id)
    if conn is None or conn.status != "connected":
        return after
    try:
        started, last = prefetch.read_ahead(project_id, conn, reads, PENDING, after)
    except Exception:
        db.session.rollback()
        log.exception("looking ahead for reads failed; they are made as events come up")
        return after
    if started:
        log.debug("drain of project %s: %d reads started ahead", project_id, started)
    return last


def _forget_reads(project_id: int, reads: Prefetcher, waiting: dict[int, batch.Wait],
                  waited: dict[int, datetime | None]) -> None:
    """Move from ``waiting`` to ``waited`` the rows whose background read is over: they
    are claimed again and applied with the copy read (or read in line if the read failed
    or a newer copy replaced it). A row whose read this drain started is noted with when
    its request was sent."""
    keys = sorted({(w.kind, w.stripe_id) for w in waiting.values()})
    over = {key: state for key, state in zip(keys, reads.landed(
        [reads.key(project_id, kind, sid) for kind, sid in keys]), strict=True)
        if state is not False}
    for row_id, wait in list(waiting.items()):
        state = over.get((wait.kind, wait.stripe_id), False)
        if state is False:
            continue
        del waiting[row_id]
        waited[row_id] = state if wait.own and isinstance(state, datetime) else None


def _apply_claimed(project_id: int, rows: list[StripeWebhookEvent],
                   reads: Prefetcher | None = None,
                   waiting: dict[int, batch.Wait] | None = None,
                   waited: dict[int, datetime | None] | None = None) -> int:
    """Apply the leading run of claimed rows a batch handles, or the first row alone if
    it is not one; commits (which releases the rows left over: still pending). Returns
    the number of rows applied; rows left for a background read go into ``waiting``."""
    _prepare_client(project_id)  # a token refresh commits: do it before the batch writes
    conn = snapshot(project_id)
    decoded = _owned(project_id, [(row, _decode(row)) for row in rows])
    if not decoded:
        db.session.commit()
        return 0
    items: list[tuple[StripeWebhookEvent, dict]] = []
    for row, event in decoded:
        if not isinstance(event, dict) or batch.plan(conn, event) == batch.SLOW:
            break
        items.append((row, event))
    if not items:
        row = decoded[0][0]
        try:
            with log_context(stripe_event_id=row.event_id):
                _process_row(project_id, row)
        except _Retry as retry:
            _schedule_retry(row.id, project_id, retry.attempts)
        return 1
    assert conn is not None
    return _apply_batch(project_id, conn, items, reads, waiting, waited)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch is applied (the collector runs after).

    A batch allocates tens of thousands of objects (decoded events, rows, traits); the
    collector kept running over the worker's whole heap meanwhile: 27-30% of a drain's
    Python CPU time (4,000 events, 1.96-2.12 s → 1.38-1.55 s). Nearly all of it is freed
    by reference counting; the few cycles a batch makes wait for the next collection."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


BUSY_PAUSE = 0.02  # seconds a drain waits when all it claimed is another drain's
BUSY_ROUNDS = 25   # ... that many times in a row before it leaves the inbox to the other


def _decode(row: StripeWebhookEvent) -> dict | None:
    """The stored event, parsed by orjson (a tenth of a drain's Python time went to the
    standard parser); what orjson refuses and the standard parser takes (integers past
    64 bits, ``NaN``, lone surrogates) is parsed by the latter, as before."""
    try:
        event = orjson.loads(row.payload)
    except orjson.JSONDecodeError:
        try:
            event = json.loads(row.payload)
        except ValueError:
            return None
    return event if isinstance(event, dict) else None


# Take the customers' locks that no other transaction holds (never waiting): a drain
# holds each customer whose events it applies until it commits. A linked Stripe customer
# is locked as its CrowdPower customer (several Stripe customers share one when they share
# an email, and the batch locks that customer's links: the other drain would wait there).
_TRY_LOCK = text("""
SELECT k FROM unnest(CAST(:keys AS text[])) AS k
LEFT JOIN stripe_customer_links l ON l.project_id = :project_id AND l.stripe_customer_id = k
WHERE pg_try_advisory_xact_lock(hashtextextended(
    :scope || coalesce('c' || l.customer_id::text, 's' || k), 0))
""")
# The first pending event of each customer outside the claimed rows (another drain's, or
# one left for later): the customer's events after it must wait for it.
_EARLIER = text("""
SELECT customer_stripe_id, min(id) FROM stripe_webhook_events
WHERE project_id = :project_id AND status = 'pending'
  AND customer_stripe_id = ANY(CAST(:keys AS text[])) AND id <> ALL(CAST(:ids AS bigint[]))
  AND id < :last
GROUP BY customer_stripe_id
""")


def hold_customers(connection: Any, project_id: int, keys: list[str]) -> set[str]:
    """Take these Stripe customers of the project (a linked one as its CrowdPower
    customer) for the current transaction of ``connection`` (a session or connection),
    those no other transaction holds, without waiting (PostgreSQL advisory locks);
    returns those taken."""
    return set(connection.execute(_TRY_LOCK, {"keys": sorted(keys), "project_id": project_id,
                                              "scope": f"stripe:{project_id}:"}).scalars())


def _owned(project_id: int, claimed: list[tuple[StripeWebhookEvent, dict | None]]
           ) -> list[tuple[StripeWebhookEvent, dict | None]]:
    """The claimed rows this drain may apply now, in order: those of customers it could
    lock (another drain applying a customer's events keeps them; this one does not wait
    for it) and whose earlier events are not pending elsewhere (a customer's events are
    applied in arrival order, across batches and drains). The others stay locked until
    this transaction ends, then pending for the next claim. Rows naming no customer pass.
    On SQLite one job writes at a time: all pass."""
    if db.engine.dialect.name != "postgresql":
        return claimed
    keys = {row.id: row.customer_stripe_id or (
        mapping.event_customer_key(event) if event is not None else None)
        for row, event in claimed}
    wanted = sorted({k for k in keys.values() if k})
    if not wanted:
        return claimed
    session = db.session
    held = hold_customers(session, project_id, wanted)
    first_elsewhere = dict(session.execute(_EARLIER, {
        "project_id": project_id, "keys": sorted(held),
        "ids": [row.id for row, _e in claimed],
        "last": max(row.id for row, _e in claimed)}).all()) if held else {}
    return [(row, event) for row, event in claimed
            if (key := keys[row.id]) is None
            or (key in held and row.id < first_elsewhere.get(key, row.id + 1))]


def _apply_batch(project_id: int, conn, items: list[tuple[StripeWebhookEvent, dict]],
                 reads: Prefetcher | None = None,
                 waiting: dict[int, batch.Wait] | None = None,
                 waited: dict[int, datetime | None] | None = None) -> int:
    """Apply ``items`` together and commit. If one event fails, it alone is marked
    ``retry`` (an attempt, as if applied alone) and the batch is applied again without
    it; a failure no event is to blame for (or one that applying alone treats as an
    outcome: access refused, a permission missing) applies the events one by one.
    Events left for a background read (``reads``) stay pending, listed in ``waiting``."""
    handled = 0
    while items:
        facts = [(row.id, row.event_id, row.type, (row.attempts or 0) + 1)
                 for row, _e in items]
        left: dict[int, batch.Wait] = {}
        try:
            with project_scope(project_id):
                outcomes = batch.apply_batch(project_id, conn, items, reads, left, waited)
            facts = [fact for fact in facts if fact[0] in outcomes]
            now = utcnow()
            if facts:
                db.session.connection().execute(MARK_APPLIED, [
                    {"row_id": row_id, "new_status": outcomes[row_id][0],
                     "note": outcomes[row_id][1], "done_at": now, "tries": tries}
                    for row_id, _event_id, _type, tries in facts])
            _commit_without_flush_wait()
            if waiting is not None:
                waiting.update(left)
        except Exception as exc:
            db.session.rollback()
            culprit = exc.row_id if isinstance(exc, batch.BatchFailed) else None
            cause = exc.__cause__ if isinstance(exc, batch.BatchFailed) else exc
            if culprit is None or isinstance(cause, ReconnectNeeded | MissingPermission):
                log.warning("a batch of %d webhook events failed (%s: %s): applying them "
                            "one by one", len(facts), type(cause).__name__, cause)
                for row_id, *_rest in facts:
                    _apply_alone(project_id, row_id)
                return handled + len(facts)
            handled += 1
            _fail_alone(project_id, culprit, cause)
            ids = [row.id for row, _e in items if row.id != culprit]
            claimed = {row.id: row for row in db.session.scalars(select(StripeWebhookEvent)
                       .where(StripeWebhookEvent.project_id == project_id,
                              StripeWebhookEvent.id.in_(ids), PENDING)
                       .with_for_update(skip_locked=True))}
            items = [(claimed[row.id], event) for row, event in items if row.id in claimed]
            # The rollback let the customers go: take them again (those still free).
            items = [(row, event) for row, event in _owned(project_id, items)
                     if event is not None]
            continue
        for row_id, event_id, event_type, _tries in facts:
            status = outcomes[row_id][0]
            EVENTS_APPLIED.labels(type=event_type, status=status).inc()
            with log_context(stripe_event_id=event_id):
                log.debug("webhook row %s (%s) %s", row_id, event_type, status)
        return handled + len(facts)
    db.session.commit()
    return handled


def _claim_pending(project_id: int, row_id: int) -> StripeWebhookEvent | None:
    """Lock one event of a failed batch if it is still pending and no other drain holds
    it; else end the transaction and return None (someone else has it, or it is done)."""
    row = db.session.scalar(select(StripeWebhookEvent).where(
        StripeWebhookEvent.id == row_id, StripeWebhookEvent.project_id == project_id,
        PENDING).with_for_update(skip_locked=True))
    if row is None:
        db.session.commit()
    return row


def _fail_alone(project_id: int, row_id: int, exc: BaseException) -> None:
    """The event a batch failed on: an attempt that failed, as if it had been applied
    alone (unless another drain took it meanwhile)."""
    row = _claim_pending(project_id, row_id)
    if row is None:
        return
    with log_context(stripe_event_id=row.event_id):
        attempts = _record_failure(row.id, row.type, (row.attempts or 0) + 1, exc)
    if attempts is not None:
        _schedule_retry(row_id, project_id, attempts)


def _commit_without_flush_wait() -> None:
    """Commit a batch without waiting for its WAL to reach the disk (PostgreSQL's
    ``synchronous_commit = off``, this transaction only). Safe: a crash can lose only the
    last fraction of a second of commits, whose inbox rows then read ``pending`` again
    (the stored events are the durable copy, written by the endpoint's own committed
    transaction) and are re-applied idempotently: events by Stripe's id, mirror newest
    wins, traits recomputed. Visibility is unchanged: others see the commit at once."""
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text("SET LOCAL synchronous_commit = off"))
    db.session.commit()


MARK_APPLIED = (StripeWebhookEvent.__table__.update()
                .where(StripeWebhookEvent.__table__.c.id == bindparam("row_id"))
                .values(status=bindparam("new_status"), error=bindparam("note"),
                        processed_at=bindparam("done_at"), attempts=bindparam("tries")))


def _apply_alone(project_id: int, row_id: int) -> None:
    """One event of a failed batch, in its own transaction (unless another drain has
    taken or finished it meanwhile)."""
    row = _claim_pending(project_id, row_id)
    if row is None:
        return
    try:
        with log_context(stripe_event_id=row.event_id):
            _process_row(project_id, row)
    except _Retry as retry:
        _schedule_retry(row_id, project_id, retry.attempts)


def _more_pending(project_id: int, claimed: int) -> bool:
    return db.session.scalar(select(StripeWebhookEvent.id).where(
        StripeWebhookEvent.project_id == project_id, PENDING,
        StripeWebhookEvent.id > claimed).limit(1)) is not None


def retry_policy() -> RetryPolicy:
    """A failing event: ``MAX_ATTEMPTS`` tries, after the host's job retry intervals."""
    return RetryPolicy.scheduled(setting("JOB_RETRY_INTERVALS") or [0], attempts=MAX_ATTEMPTS)


def _schedule_retry(row_id: int, project_id: int, attempts: int) -> None:
    enqueue(process_event, row_id, queue=QUEUE, project_id=project_id,
            delay=retry_policy().delay(attempts), retries=0)


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
        with log_context(stripe_event_id=row.event_id):
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
    inbox_id, event_type = row.id, row.type
    _prepare_client(project_id)  # a token refresh commits: do it before this row writes
    row.attempts = (row.attempts or 0) + 1
    attempts = row.attempts
    try:
        with project_scope(project_id):
            status, note = apply_event(project_id, row, json.loads(row.payload))
    except Exception as exc:
        db.session.rollback()
        retry_after = _record_failure(inbox_id, event_type, attempts, exc)
        if retry_after is None:
            return "failed"
        raise _Retry(retry_after) from exc
    row.status, row.error, row.processed_at = status, note, utcnow()
    db.session.commit()
    EVENTS_APPLIED.labels(type=event_type, status=status).inc()
    log.debug("webhook row %s (%s) %s", inbox_id, event_type, status)
    return status


def _record_failure(inbox_id: int, event_type: str, attempts: int,
                    exc: BaseException) -> int | None:
    """Record a failed attempt (its transaction rolled back) and commit: ``retry``, or
    ``failed`` after ``MAX_ATTEMPTS``; a 429 ("slow down") is not counted. Returns the
    attempts to schedule the retry after, or None when it gave up."""
    if getattr(exc, "http_status", None) == 429:  # "slow down" is not a failure
        attempts -= 1
    final = retry_policy().gives_up(attempts)
    db.session.execute(StripeWebhookEvent.__table__.update().where(
        StripeWebhookEvent.id == inbox_id).values(
        attempts=attempts, error=f"{type(exc).__name__}: {exc}"[:2000],
        status="failed" if final else "retry", enqueued_at=utcnow()))
    db.session.commit()
    EVENTS_APPLIED.labels(type=event_type, status="failed" if final else "retry").inc()
    if final:
        log.error("webhook row %s failed for good", inbox_id, exc_info=exc)
        return None
    log.warning("webhook row %s failed (attempt %d), retrying later: %s", inbox_id,
                attempts, exc)
    return max(attempts, 1)


def _prepare_client(project_id: int) -> None:
    """Refresh an App connection's access token if due, while nothing is written yet.

    On SQLite the refresh (its own connection and transaction) could not commit while this
    job's session holds the write lock; problems surface again in the look-up itself.
    """
    with db.session.no_autoflush:
        conn = snapshot(project_id)
    if conn is None or conn.kind != "app" or conn.status != "connected":
        return
    try:
        client_for(project_id, conn).prepare()
    except (ReconnectNeeded, TokenEndpointError, OSError, RuntimeError):
        pass
