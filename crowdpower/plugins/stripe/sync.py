"""Initial and on-demand sync of a connected account into the mirror and traits.

A run (``StripeSyncRun``) goes pending → running → succeeded/failed through the
phases customers → products → prices → subscriptions → charges → disputes → traits. The
list phases' account-wide lists (100 per page) are independent, so they are fetched at
once, one thread per list under the account's shared rate cap, while this thread writes
each list's pages every ``STRIPE_SYNC_FLUSH_OBJECTS`` objects, committed together with
that list's cursor: memory stays bounded and a killed worker resumes from the last
committed cursors with the same end result (writes are upserts). ``run.phase`` is the
first list not finished. On PostgreSQL the traits of customers whose objects are all
written are computed meanwhile (``streamed_traits``); the traits phase then walks the
linked customers in id order, checkpointed, computing the rest.

Fairness: the job runs on the ``sync`` queue (never in front of webhooks), in time
slices (``STRIPE_SYNC_SLICE_SECONDS``) after which it re-enqueues itself, and holds a
per-tenant lease (``STRIPE_SYNC_MAX_PER_TENANT`` slots; Redis keys with a TTL renewed
by a heartbeat, or the runs' ``heartbeat_at`` without Redis). A job that finds no free
slot re-enqueues itself with a delay instead of occupying a worker.

Faults: every request, retries included, goes through the per-account rate cap and
is counted in ``api_calls``, so the SDK's own retries are off (``max_network_retries=0``)
and this module retries instead: 429 → back off with jitter (honouring ``Retry-After``),
5xx/409/connection errors → back off (5xx always, the reads are idempotent; otherwise
``Stripe-Should-Retry`` honoured). After
``STRIPE_SYNC_MAX_ATTEMPTS`` consecutive failures the run fails with a readable error;
a Resync then starts a new run from the failed run's checkpoint (``resumed_from_id``).
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime, timedelta

import requests
import stripe
from flask import current_app
from redis import Redis
from sqlalchemy import func, select, text

from crowdpower.plugins.stripe import store
from crowdpower.plugins.stripe.client import MissingPermission, account_client
from crowdpower.plugins.stripe.connection import connection
from crowdpower.plugins.stripe.metrics import API_RETRIES, SYNC_OBJECTS, SYNC_RUNS
from crowdpower.plugins.stripe.models import StripeCustomerLink, StripeSyncRun
from crowdpower.plugins.stripe.queues import QUEUES
from crowdpower.plugins.stripe.ratelimit import limiter, rate_for
from crowdpower.plugins.stripe.streamed_traits import StreamedTraits
from crowdpower.plugins.stripe.tokens import ReconnectNeeded, TokenEndpointError
from crowdpower.services import (
    RetryPolicy,
    after_commit,
    current_project_id,
    db,
    enqueue,
    get_by_id_and_project,
    project_scope,
    setting,
    utcnow,
)

log = logging.getLogger(__name__)

QUEUE = QUEUES["sync"]
ACTIVE = ("pending", "running")
PHASES = ("customers", "products", "prices", "subscriptions", "charges", "disputes", "traits")
# phase → (mirror kind, list path, extra list params). Stripe expands at most 4 levels, so
# products (``data.items.data.price.product`` would be 5) are listed in their own phase
# (ceil(products/100) calls) and plan names read from the mirror.
LISTS = {
    "customers": ("customer", "/v1/customers", {}),
    "products": ("product", "/v1/products", {}),
    # Tiers are left out of prices unless asked for (and would be 5 levels deep in a list
    # of subscriptions): tiered items take them from the mirrored price.
    "prices": ("price", "/v1/prices", {"expand": ["data.tiers"]}),
    "subscriptions": ("subscription", "/v1/subscriptions",
                      {"status": "all", "expand": ["data.discounts.source.coupon"]}),
    "charges": ("charge", "/v1/charges", {}),
    # Lost disputes reduce lifetime spend; the charge (expanded) names the customer.
    "disputes": ("dispute", "/v1/disputes", {"expand": ["data.charge"]}),
}
LIST_PHASES = tuple(p for p in PHASES if p in LISTS)
RATE_LIMIT_BUDGET = 20  # consecutive 429s worth one ordinary failure


@dataclass
class Fetched:
    """A page fetched on the fetch thread, with what it cost."""

    data: dict | None = None
    calls: int = 0
    retries: int = 0
    rate_limited: int = 0
    seconds: float = 0.0
    error: str | None = None
    missing_permission: str | None = None
    fetched_at: datetime | None = None  # the write's ordering stamp: when Stripe answered


class ListFetchers:
    """Fetches several lists at once, one helper thread per list, into one queue.

    Each thread walks its list in order (the next cursor is the last id of the page
    before); the threads share the account's rate limiter, so while the consumer maps
    and writes, every request slot Stripe grants is used by some list. At most
    ``depth`` fetched pages wait for the consumer (a shared budget, so memory stays
    bounded whatever the number of lists); the consumer takes them in arrival order.
    """

    def __init__(self, fetch: Callable[[str, dict], Fetched], depth: int) -> None:
        self.pages: queue.Queue[tuple[str, Fetched | Exception]] = queue.Queue()
        self._fetch = fetch
        self._budget = threading.Semaphore(max(1, depth))
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, phase: str, path: str, params: Callable[[str | None], dict],
              cursor: str | None) -> None:
        thread = threading.Thread(target=self._run, args=(phase, path, params, cursor),
                                  daemon=True, name=f"stripe-sync-fetch-{phase}")
        self._threads.append(thread)
        thread.start()

    def _run(self, phase: str, path: str, params: Callable[[str | None], dict],
             after: str | None) -> None:
        try:
            while self._slot():
                got = self._fetch(path, params(after))
                got.fetched_at = utcnow()
                self.pages.put((phase, got))  # even when stopping: its call was made
                objects = (got.data or {}).get("data") or []
                if got.error or not (got.data or {}).get("has_more") or not objects:
                    return
                after = objects[-1]["id"]
        except Exception as exc:  # a bug, not a Stripe error: the consumer raises it
            self.pages.put((phase, exc))

    def _slot(self) -> bool:
        """Wait for room in the budget; False once stopping."""
        while not self._stopping.is_set():
            if self._budget.acquire(timeout=0.05):
                return True
        return False

    def get(self, timeout: float) -> tuple[str, Fetched]:
        """The next page of any list (``TimeoutError`` if none came within ``timeout``)."""
        try:
            phase, got = self.pages.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        self._budget.release()
        if isinstance(got, Exception):
            raise got
        return phase, got

    def stop(self) -> list[tuple[str, Fetched]]:
        """Stop fetching; the pages fetched but not yet taken, in order (per list)."""
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        left: list[tuple[str, Fetched]] = []
        while True:
            try:
                phase, got = self.pages.get_nowait()
            except queue.Empty:
                break
            if isinstance(got, Fetched):
                left.append((phase, got))
        return left


class SyncFailed(Exception):
    """A failure the run reports as its error (the message is shown to the user)."""


# -- requesting a sync --------------------------------------------------------------

def request_sync(project_id: int, reason: str = "connect") -> tuple[StripeSyncRun, bool]:
    """Start a sync unless one is active; ``(run, started)``. The caller commits.

    A run that is pending or running is returned with ``False``, unless its worker
    vanished (no heartbeat for ``STRIPE_SYNC_STALE_SECONDS``): then it is re-enqueued
    and resumes from its checkpoint. After a failed run, the new run starts from the
    failed run's checkpoint; after a successful one it is a full (idempotent) sync.
    """
    with project_scope(project_id):
        # Serialise concurrent requests of one project on its connection row (PostgreSQL).
        connection(project_id, for_update=True)
        latest = db.session.scalar(select(StripeSyncRun).where(
            StripeSyncRun.project_id == project_id).order_by(StripeSyncRun.id.desc()).limit(1))
        if latest is not None and latest.state in ACTIVE:
            if not _is_stale(latest):
                return latest, False
            _enqueue_after_commit(project_id, latest.id)
            return latest, True
        run = StripeSyncRun(project_id=project_id, state="pending", reason=reason,
                            counts={}, cursors={}, customers_processed=0, api_calls=0,
                            attempts=0)
        if latest is not None and latest.state == "failed" and latest.cursors:
            run.resumed_from_id = latest.id
            run.phase, run.cursors, run.counts = latest.phase, dict(latest.cursors), \
                dict(latest.counts or {})
            run.customers_processed = latest.customers_processed
            run.customers_total = latest.customers_total
        db.session.add(run)
        db.session.flush()
        _enqueue_after_commit(project_id, run.id)
        return run, True


def _is_stale(run: StripeSyncRun) -> bool:
    if run.heartbeat_at is not None and utcnow() - run.heartbeat_at > timedelta(
            seconds=3 * float(setting("STRIPE_SYNC_LEASE_SECONDS"))):
        return True  # its worker died mid-slice (the heartbeat stopped)
    seen = run.heartbeat_at or run.started_at or run.created_at
    return seen is not None and utcnow() - seen > timedelta(
        seconds=setting("STRIPE_SYNC_STALE_SECONDS"))


def _enqueue(project_id: int, run_id: int, delay: float | None = None) -> None:
    timeout = int(setting("STRIPE_SYNC_SLICE_SECONDS") + setting("STRIPE_SYNC_MAX_ATTEMPTS")
                  * setting("STRIPE_SYNC_BACKOFF_MAX") + 300)
    enqueue(run_sync, run_id, queue=QUEUE, project_id=project_id, delay=delay,
                 timeout=timeout)


def _enqueue_after_commit(project_id: int, run_id: int) -> None:
    after_commit(lambda: _enqueue(project_id, run_id))


# -- the per-tenant lease -----------------------------------------------------------

_RENEW = """if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"""
_RELEASE = """if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1]) end return 0"""


class Lease:
    """One of the tenant's ``STRIPE_SYNC_MAX_PER_TENANT`` sync slots, held while working.

    With Redis: a key per slot plus one per run (so one run never runs twice at once),
    each with a TTL the heartbeat renews; a dead worker's slot frees itself. Without
    Redis: running runs whose ``heartbeat_at`` is fresher than the TTL hold the slots.
    """

    def __init__(self, project_id: int, run_id: int) -> None:
        self.project_id, self.run_id = project_id, run_id
        self.ttl = float(setting("STRIPE_SYNC_LEASE_SECONDS"))
        self.slots = max(1, int(setting("STRIPE_SYNC_MAX_PER_TENANT")))
        self.token = secrets.token_hex(8)
        self.keys: list[str] = []
        url = current_app.config.get("REDIS_URL")
        self.redis = None
        if url:
            self.redis = Redis.from_url(url)
            self.prefix = f"{current_app.config.get('RQ_QUEUE_PREFIX', '')}crowdpower:" \
                          f"stripe-sync:{project_id}"

    def acquire(self, run: StripeSyncRun) -> bool:
        if self.redis is not None:
            return self._acquire_redis()
        fresh = utcnow() - timedelta(seconds=self.ttl)
        running = list(db.session.execute(select(StripeSyncRun.id).where(
            StripeSyncRun.project_id == self.project_id, StripeSyncRun.state == "running",
            StripeSyncRun.heartbeat_at > fresh).with_for_update()).scalars())
        if run.id in running or len(running) >= self.slots:
            db.session.rollback()
            return False
        run.heartbeat_at = utcnow()
        db.session.commit()
        return True

    def _acquire_redis(self) -> bool:
        ms = int(self.ttl * 1000)
        run_key = f"{self.prefix}:run:{self.run_id}"
        if not self.redis.set(run_key, self.token, nx=True, px=ms):
            return False
        for slot in range(self.slots):
            key = f"{self.prefix}:slot:{slot}"
            if self.redis.set(key, self.token, nx=True, px=ms):
                self.keys = [run_key, key]
                return True
        self.redis.eval(_RELEASE, 1, run_key, self.token)
        return False

    def renew(self, run: StripeSyncRun) -> None:
        """Heartbeat: keep the slot (call at least every ``ttl / 2``)."""
        run.heartbeat_at = utcnow()
        for key in self.keys:
            self.redis.eval(_RENEW, 1, key, self.token, int(self.ttl * 1000))

    def release(self, run: StripeSyncRun | None) -> None:
        for key in self.keys:
            self.redis.eval(_RELEASE, 1, key, self.token)
        if run is not None:
            run.heartbeat_at = None


# -- the job ------------------------------------------------------------------------

def run_sync(run_id: int) -> None:
    """Job: work on the run for one time slice, then re-enqueue itself until done."""
    project_id = current_project_id()
    assert project_id is not None, "run_sync runs in a project's scope"
    run = get_by_id_and_project(StripeSyncRun, run_id, project_id)
    if run is None or run.state not in ACTIVE:
        log.info("sync run %s of project %s is not active; nothing to do", run_id, project_id)
        return
    lease = Lease(project_id, run.id)
    if not lease.acquire(run):
        log.info("sync run %s of project %s waits for a free slot", run_id, project_id)
        _enqueue(project_id, run.id, delay=setting("STRIPE_SYNC_DEFER_SECONDS"))
        return
    try:
        finished = Syncer(run, lease).work()
    finally:
        run = get_by_id_and_project(StripeSyncRun, run_id, project_id)
        lease.release(run)
        db.session.commit()
    if not finished:
        _enqueue(project_id, run_id)


class Syncer:
    """The work of one slice of a run; every page is committed with its checkpoint."""

    def __init__(self, run: StripeSyncRun, lease: Lease) -> None:
        self.run, self.lease = run, lease
        self.project_id = run.project_id
        self.page_size = int(setting("STRIPE_SYNC_PAGE_SIZE"))
        self.flush_objects = int(setting("STRIPE_SYNC_FLUSH_OBJECTS"))
        self.traits_batch = max(1, int(setting("STRIPE_SYNC_TRAITS_BATCH")))
        # Time inside Stripe calls, summed over the fetch threads (counts["stripe_ms"]),
        # and this thread's waits for a page (counts["wait_ms"]).
        self.stripe_seconds = 0.0
        self.waited = 0.0
        self.unsaved_calls = 0  # counted, not yet added to run.api_calls (``_settle``)
        self.streamed: StreamedTraits | None = None  # traits computed during the lists
        self.stream_ready: list[int] = []
        self.stream_write: Future | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.next_objects_analyze = 5000
        self.next_analyze = 1000  # statistics are refreshed as bulk-loaded tables double
        self.backoff_base = float(setting("STRIPE_SYNC_BACKOFF_BASE"))
        self.backoff_max = float(setting("STRIPE_SYNC_BACKOFF_MAX"))
        # A failing page: backoff with jitter, STRIPE_SYNC_MAX_ATTEMPTS in a row at most.
        self.max_attempts = max(1, int(setting("STRIPE_SYNC_MAX_ATTEMPTS")))
        self.retry = RetryPolicy(attempts=self.max_attempts, base=self.backoff_base,
                                 cap=self.backoff_max, jitter=self.backoff_base,
                                 retryable=lambda exc: self._retryable(exc)[0])
        self.deadline = time.monotonic() + float(setting("STRIPE_SYNC_SLICE_SECONDS"))
        self.limiter = limiter(current_app._get_current_object())  # type: ignore[attr-defined]

    def work(self) -> bool:
        """True when the run has ended (succeeded or failed), False if the slice ran out."""
        run = self.run
        try:
            conn = connection(self.project_id)
            if conn is not None and conn.status == "reconnect_needed":
                raise SyncFailed("Stripe access needs reconnecting: reconnect Stripe, then "
                                 "Resync.")
            if conn is None or conn.status != "connected" or not conn.stripe_user_id:
                raise SyncFailed("Stripe is not connected to this project.")
            self.account, self.rate = conn.stripe_user_id, rate_for(current_app.config,
                                                                     conn.livemode)
            # App installs read with the install's access token (refreshed as it expires,
            # the failed page sent again); legacy links with the platform key.
            self.client = account_client(self.project_id, max_network_retries=0, conn=conn)
            run.state, run.error = "running", None
            run.started_at = run.started_at or utcnow()
            run.attempts = (run.attempts or 0) + 1
            run.heartbeat_at = utcnow()
            run.phase = run.phase or PHASES[0]
            db.session.commit()
            if run.phase != "traits" and not self._lists():
                self._checkpoint()  # the calls of pages fetched when the slice ended
                return False
            run.phase = "traits"
            if not self._traits():
                return False
            run.state, run.finished_at = "succeeded", utcnow()
            self._settle()
            db.session.commit()
            SYNC_RUNS.labels(outcome="succeeded").inc()
            return True
        except SyncFailed as exc:
            self._fail(str(exc))
            return True
        except Exception as exc:
            log.exception("sync run %s of project %s crashed", run.id, self.project_id)
            self._fail(f"Internal error while syncing ({type(exc).__name__}); "
                       "Resync continues from the last checkpoint.", rollback=True)
            return True
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)

    def _fail(self, message: str, rollback: bool = False) -> None:
        self._settle()
        calls = self.run.api_calls
        if rollback:
            db.session.rollback()
            self.run = get_by_id_and_project(StripeSyncRun, self.run.id, self.project_id)
            self.run.api_calls = max(self.run.api_calls or 0, calls or 0)
        self.run.state, self.run.error, self.run.finished_at = "failed", message, utcnow()
        db.session.commit()
        SYNC_RUNS.labels(outcome="failed").inc()

    def _checkpoint(self, phase: str | None = None, started: float | None = None) -> None:
        """Commit progress. ``counts["write_ms"][phase]`` adds up the time spent writing
        (mapping, linking, the database; the final commit aside) since ``started``: what
        the sync costs us, apart from waiting on Stripe (``counts["stripe_ms"]``)."""
        counts = dict(self.run.counts or {})
        counts["stripe_ms"] = counts.get("stripe_ms", 0) + round(self.stripe_seconds * 1000)
        counts["wait_ms"] = counts.get("wait_ms", 0) + round(self.waited * 1000)
        self.waited = 0.0
        if phase is not None and started is not None:
            written = dict(counts.get("write_ms") or {})
            written[phase] = written.get(phase, 0) + round((time.monotonic() - started) * 1000)
            counts["write_ms"] = written
        self.stripe_seconds = 0.0
        self.run.counts = counts
        self._settle()
        self.lease.renew(self.run)
        if db.engine.dialect.name == "postgresql":
            # Without waiting for the WAL to reach the disk: a crash can lose only the
            # last checkpoints, each whole (the pages written and the cursor past them
            # are one transaction), and the run resumes from the one before.
            db.session.execute(text("SET LOCAL synchronous_commit = off"))
        db.session.commit()

    def _lists(self) -> bool:
        """Page through every account-wide list still to do; False if the slice ran out.

        The lists are independent, so they are fetched at once (``ListFetchers``: one
        thread per list, the account's rate limit shared) while this thread writes the
        pages as they come: Stripe's request slots never wait on our mapping and writes,
        and those overlap the fetches. Whenever the lists' unwritten pages hold
        ``STRIPE_SYNC_FLUSH_OBJECTS`` objects, the fullest list's are written and its
        cursor checkpointed; a finished list is recorded in ``cursors["listed"]`` (a
        resumed run fetches it no more). Memory stays bounded (twice that many objects:
        fetched and waiting, fetched and unwritten), and a killed worker re-fetches at most
        that many. When the slice ends, pages already fetched are written, not fetched
        again.
        """
        run = self.run
        cursors = run.cursors or {}
        start = LIST_PHASES.index(run.phase) if run.phase in LIST_PHASES else 0
        todo = [p for p in LIST_PHASES[start:] if LISTS[p][0] not in self._listed()]
        buffers: dict[str, list[tuple[list[dict], datetime]]] = {p: [] for p in todo}
        more = dict.fromkeys(todo, True)
        self.fresh = {}
        # Streaming needs this slice to see the customers written, and a second writer
        # (the helper thread's transaction): PostgreSQL, not SQLite's single write lock.
        if "customers" in todo and db.engine.dialect.name == "postgresql":
            self.streamed = StreamedTraits({LISTS[p][0] for p in todo})
        fetchers = ListFetchers(self._fetch, max(1, self.flush_objects // max(1, self.page_size)))
        for phase in todo:
            kind, path, extra = LISTS[phase]
            cursor = cursors.get(kind)
            self.fresh[kind] = not cursor and not store.has_objects(self.project_id, kind)
            fetchers.start(phase, path, self._params(extra), cursor)

        def add(phase: str, page: dict, fetched_at: datetime | None) -> None:
            objects = page.get("data") or []
            buffers[phase].append((objects, fetched_at or utcnow()))
            more[phase] = bool(page.get("has_more")) and bool(objects)

        try:
            while any(more.values()):
                phase, got = self._await(fetchers.get)
                add(phase, self._take(got), got.fetched_at)
                out_of_time = time.monotonic() > self.deadline
                if out_of_time:
                    for left_phase, left in fetchers.stop():
                        if left.error or not more[left_phase]:
                            self._count(left)  # not used: its list ended or failed
                            continue
                        add(left_phase, self._take(left), left.fetched_at)
                # A list's pages are written when it ends (or the slice does), and the
                # fullest buffer whenever all of them hold a flush's worth: the pages held
                # stay about what one list alone would hold, whatever the number of lists.
                size = {p: sum(len(objects) for objects, _at in buffers[p]) for p in todo}
                for p in todo:
                    if buffers[p] and (not more[p] or out_of_time):
                        self._flush(p, buffers[p], more[p])
                        buffers[p], size[p] = [], 0
                while sum(size.values()) >= self.flush_objects:
                    p = max(todo, key=lambda k: size[k])
                    self._flush(p, buffers[p], more[p])
                    buffers[p], size[p] = [], 0
                if out_of_time and any(more.values()):
                    self.streamed = None  # the next slice's traits phase computes them all
                    return False
                self._stream_traits()
            return True
        finally:
            for _phase, got in fetchers.stop():  # fetched, never written: calls still count
                self._count(got)
            self._streamed_written()

    def _stream_traits(self, minimum: int = 200) -> None:
        """Traits of customers whose objects are all written (``StreamedTraits``), computed
        while the lists are still fetched: on a helper thread (its own transaction), one
        batch of ``minimum`` to ``STRIPE_SYNC_TRAITS_BATCH`` customers at a time, so reading
        the mirror, mapping and writing traits overlap this thread's list writes and the
        fetches."""
        streamed = self.streamed
        if streamed is None:
            return
        if self.stream_write is not None:
            if not self.stream_write.done():
                return
            self._streamed_written()
        self.stream_ready.extend(streamed.ready())
        if len(self.stream_ready) < minimum:
            return
        # At most a traits batch at a time: customers pile up while a batch runs (a whole
        # list can finish meanwhile), and one batch's objects are held in memory at once.
        ids = self.stream_ready[:self.traits_batch]
        del self.stream_ready[:self.traits_batch]
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        self.stream_write = self._traits_pool().submit(_stream_batch, app, self.project_id,
                                                       ids)

    def _streamed_written(self) -> None:
        """Wait for the streamed batch on the helper thread, if any, and record it."""
        future, self.stream_write = self.stream_write, None
        while future is not None:
            try:
                ids, owners, seconds = future.result(timeout=self.lease.ttl / 3)
            except FutureTimeout:
                self._checkpoint()  # keeps the lease while the database works
                continue
            if self.streamed is not None:
                self.streamed.computed(ids, owners)
            counts = dict(self.run.counts or {})
            written = dict(counts.get("write_ms") or {})
            written["traits"] = written.get("traits", 0) + round(seconds * 1000)
            counts["write_ms"] = written
            self.run.counts = counts
            return

    def _traits_pool(self) -> ThreadPoolExecutor:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="stripe-sync-traits")
        return self.pool

    def _params(self, extra: dict) -> Callable[[str | None], dict]:
        def params(after: str | None) -> dict:
            return {"limit": self.page_size, **extra,
                    **({"starting_after": after} if after else {})}
        return params

    def _listed(self) -> set[str]:
        """Kinds whose list is done: recorded as such, or of a phase before the run's
        (a run checkpointed before lists were fetched at once)."""
        run = self.run
        done = set((run.cursors or {}).get("listed") or [])
        if run.phase in PHASES:
            done |= {LISTS[p][0] for p in LIST_PHASES[:PHASES.index(run.phase)]
                     if p in LISTS}
        return done

    def _flush(self, phase: str, pages: list[tuple[list[dict], datetime]],
               more: bool) -> None:
        """Write a list's buffered pages, then move its cursor and counts past them (and
        the run's phase to the first unfinished list), in one commit."""
        run = self.run
        kind = LISTS[phase][0]
        started = time.monotonic()
        objects = [o for page, _at in pages for o in page]
        store.upsert_pages(self.project_id, kind, pages, fresh=self.fresh[kind])
        links = None
        if kind == "customer":
            links = store.link_customers(self.project_id, objects)
            written = (run.counts or {}).get(phase, 0) + len(objects)
            if written >= self.next_analyze:  # the link look-ups must stay index scans
                self._analyze("stripe_customer_links", "customers")
                self.next_analyze = 2 * written
        listed = sum(v for k, v in (run.counts or {}).items()
                     if k in LISTS and isinstance(v, int)) + len(objects)
        if self.streamed is not None and listed >= self.next_objects_analyze:
            self._analyze("stripe_objects")  # streamed traits read it while it grows
            self.next_objects_analyze = 2 * listed
        SYNC_OBJECTS.labels(kind=kind).inc(len(objects))
        counts = dict(run.counts or {})
        counts[phase] = counts.get(phase, 0) + len(objects)
        if kind == "charge":  # guest charges (no customer) are mirrored, matched to no one
            guests = sum(1 for o in objects if not o.get("customer"))
            if guests:
                counts["guest_charges"] = counts.get("guest_charges", 0) + guests
        run.counts = counts
        if kind == "customer":
            run.customers_total = counts[phase] + (self.page_size if more else 0)
        cursors = dict(run.cursors or {})
        if objects:
            cursors[kind] = objects[-1]["id"]
        if not more:
            cursors["listed"] = sorted({*(cursors.get("listed") or []), kind})
        run.cursors = cursors
        listed = self._listed()
        run.phase = next((p for p in LIST_PHASES if LISTS[p][0] not in listed), "traits")
        self._checkpoint(phase, started)
        if self.streamed is not None:  # after the commit: streamed reads see these objects
            self.streamed.written(kind, objects, more, links)

    def _traits(self) -> bool:
        """Recompute traits of every linked customer in id-ordered, checkpointed batches.

        On PostgreSQL a batch is written (its own transaction, on a helper thread) while
        the next one is read and computed: the write is the database's work, the mapping
        ours, so they overlap. The cursor moves past a batch only once it is committed,
        so a killed worker recomputes at most two batches (traits are idempotent).
        """
        run = self.run
        links = StripeCustomerLink
        self._analyze("stripe_objects", "stripe_customer_links", "customers", "trait_values")
        self.next_analyze = max(1000, 2 * (run.customers_processed or 0))
        if not (run.cursors or {}).get("traits"):
            run.customers_total = db.session.scalar(select(
                func.count(func.distinct(links.customer_id))).where(
                links.project_id == self.project_id)) or 0
            run.customers_processed = 0
        overlap = db.engine.dialect.name == "postgresql"
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        after = (run.cursors or {}).get("traits") or 0
        pending: tuple[Future | None, list[int]] | None = None
        self.traits_mark = time.monotonic()  # the phase's time is counted between checkpoints
        # Computed while the lists were fetched, and nothing written for them since.
        skip = self.streamed.skip() if self.streamed is not None else set()
        if self.streamed is not None:
            run.counts = {**(run.counts or {}), "traits_streamed": len(self.streamed.done),
                          "traits_dirty": len(self.streamed.dirty)}
        with self._traits_pool() as pool:
            while True:
                if time.monotonic() > self.deadline:
                    self._traits_written(pending)
                    self._checkpoint()
                    return False
                ids = list(db.session.scalars(select(links.customer_id).where(
                    links.project_id == self.project_id, links.customer_id > after)
                    .group_by(links.customer_id).order_by(links.customer_id)
                    .limit(self.traits_batch)))
                if not ids:
                    self._traits_written(pending)
                    run.customers_total = max(run.customers_total or 0,
                                              run.customers_processed)
                    self._checkpoint()
                    return True
                rows = store.compute_traits(self.project_id,
                                            [i for i in ids if i not in skip])
                after = ids[-1]
                if not overlap:
                    store.write_traits(self.project_id, rows)
                    self._traits_written((None, ids))
                    continue
                self._traits_written(pending)
                pending = (pool.submit(_write_traits, app, self.project_id, rows), ids)

    def _traits_written(self, batch: tuple[Future | None, list[int]] | None) -> None:
        """Wait for a batch's write, then move the cursor past it (one checkpoint)."""
        if batch is None:
            return
        future, ids = batch
        while future is not None:
            try:
                future.result(timeout=self.lease.ttl / 3)
                break
            except FutureTimeout:
                self._checkpoint()  # keeps the lease while the database works
        run = self.run
        run.customers_processed = (run.customers_processed or 0) + len(ids)
        if run.customers_processed >= self.next_analyze:
            self._analyze("trait_values")
            self.next_analyze = 2 * run.customers_processed
        run.cursors = {**(run.cursors or {}), "traits": ids[-1]}
        self._checkpoint("traits", self.traits_mark)
        self.traits_mark = time.monotonic()

    def _analyze(self, *tables: str) -> None:
        """Refresh PostgreSQL's statistics of tables this run is bulk-loading.

        A busy worker's backend may not report its inserts for autovacuum to notice, and
        with "empty table" statistics the planner scans whole tables for every batch
        (a 100k-customer sync went quadratic). Re-analysing as the tables double is cheap.
        """
        if db.engine.dialect.name == "postgresql":
            db.session.commit()
            for table in tables:
                db.session.execute(text(f"ANALYZE {table}"))

    # -- talking to Stripe ----------------------------------------------------------

    def _fetch(self, path: str, params: dict) -> Fetched:
        """One list page, on the fetch thread: retries transient failures with backoff.

        Touches no database state (the main thread applies the returned counters), so
        it can run while the previous page is being written.
        """
        got = Fetched()
        failures = 0.0
        while True:
            self.limiter.wait(self.account, self.rate)
            got.calls += 1
            started, sent = time.monotonic(), self.client.calls
            try:
                got.data = self.client.get(path, **params)
                # A 401 for an expired token and the retry after refreshing: two calls.
                got.calls += max(0, self.client.calls - sent - 1)
                got.seconds += time.monotonic() - started
                return got
            except ReconnectNeeded as exc:
                got.error = f"{exc} Syncing stopped; reconnect Stripe, then Resync."
                return got
            except MissingPermission as exc:
                got.error, got.missing_permission = str(exc), exc.permission
                return got
            except (requests.RequestException, TokenEndpointError) as exc:
                # The token refresh failed on its way (nothing spent): retry with backoff.
                got.seconds += time.monotonic() - started
                failures += 1
                got.retries += 1
                if self.retry.gives_up(failures):
                    got.error = f"Refreshing Stripe access failed ({exc}); Resync continues."
                    return got
                time.sleep(self._backoff(round(failures)))
            except stripe.StripeError as exc:
                got.seconds += time.monotonic() - started
                retry, wait = self._retryable(exc)
                if not retry:
                    got.error = _describe(path, exc)
                    return got
                limited = getattr(exc, "http_status", None) == 429
                # A 429 says "slow down", not "broken": it has a far larger budget.
                failures += 1 if not limited else 1 / RATE_LIMIT_BUDGET
                got.retries += 1
                got.rate_limited += int(limited)
                if self.retry.gives_up(failures):
                    got.error = (f"{_describe(path, exc)} (gave up after {round(failures)} "
                                 "attempts in a row; Resync continues from here)")
                    return got
                time.sleep(wait if wait is not None else self._backoff(max(1, round(failures))))

    def _await(self, get: Callable[[float], tuple[str, Fetched]]) -> tuple[str, Fetched]:
        """The next fetched page of any list, keeping the lease alive meanwhile. The time
        this thread waits (nothing fetched to write) goes to ``counts["wait_ms"]``: the
        sync's time minus it is what our own work set the pace for."""
        started = time.monotonic()
        try:
            while True:
                try:
                    return get(self.lease.ttl / 3)
                except TimeoutError:
                    self._checkpoint()
        finally:
            self.waited += time.monotonic() - started

    def _count(self, got: Fetched) -> None:
        """Account a fetch's calls and time (every call counts, used or not). The calls
        reach ``run.api_calls`` at the next commit (``_settle``): reading the run's
        attribute here would reload the row after every commit, one query a page."""
        self.unsaved_calls += got.calls
        self.stripe_seconds += got.seconds

    def _settle(self) -> None:
        """Add the calls counted since the last commit to the run (before committing)."""
        if self.unsaved_calls:
            self.run.api_calls = (self.run.api_calls or 0) + self.unsaved_calls
            self.unsaved_calls = 0

    def _take(self, got: Fetched) -> dict:
        """A fetched page's data, its calls and retries counted; its error raised."""
        run = self.run
        self._count(got)
        if got.retries:
            API_RETRIES.labels(reason="rate_limited").inc(got.rate_limited)
            API_RETRIES.labels(reason="error").inc(got.retries - got.rate_limited)
            counts = dict(run.counts or {})
            counts["retries"] = counts.get("retries", 0) + got.retries
            if got.rate_limited:
                counts["rate_limited"] = counts.get("rate_limited", 0) + got.rate_limited
            run.counts = counts
        if got.missing_permission:
            conn = connection(self.project_id)
            if conn is not None:
                conn.last_error = got.error
        if got.error:
            raise SyncFailed(got.error)
        assert got.data is not None
        return got.data

    def _retryable(self, exc: stripe.StripeError) -> tuple[bool, float | None]:
        """(retry?, server-advised wait) for a failed request."""
        if isinstance(exc, stripe.APIConnectionError):
            return True, None
        headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
        advice = headers.get("stripe-should-retry")
        status = exc.http_status or 0
        wait = None
        if headers.get("retry-after"):
            try:
                wait = min(float(headers["retry-after"]), self.backoff_max)
            except ValueError:
                wait = None
        if status == 429:  # a rate limit always passes; Stripe-Should-Retry aside
            return True, wait
        if status >= 500:  # a GET changes nothing: a server error is retried whatever the
            return True, wait  # advice (Stripe sends "false" for non-idempotent requests)
        if advice in ("true", "false"):
            return advice == "true", wait
        return status == 409 or status >= 500, wait

    def _backoff(self, failures: int) -> float:
        return self.retry.delay(failures)


def _stream_batch(app, project_id: int, ids: list[int]) -> tuple[list[int], dict, float]:
    """On the sync's helper thread: compute and write one batch of traits in its own
    transaction; ``(ids, their Stripe customers, seconds)``."""
    started = time.monotonic()
    owners: dict[str, int] = {}
    with app.app_context(), project_scope(project_id):
        store.write_traits(project_id, store.compute_traits(project_id, ids, owners=owners))
        db.session.commit()
    return ids, owners, time.monotonic() - started


def _write_traits(app, project_id: int, rows: list) -> None:
    """On the sync's helper thread: write one batch of traits in its own transaction."""
    with app.app_context(), project_scope(project_id):
        store.write_traits(project_id, rows)
        db.session.commit()


def _describe(path: str, exc: stripe.StripeError) -> str:
    status = getattr(exc, "http_status", None)
    what = f"HTTP {status}" if status else "connection error"
    message = getattr(exc, "user_message", None) or str(exc) or type(exc).__name__
    return f"Stripe GET {path} failed ({what}): {message}"
