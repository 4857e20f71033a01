"""Background jobs: RQ on Redis in production, a thread in-process without Redis.

Jobs are referenced by dotted name and take ids, never objects; the project id
travels in the job's meta and is put in tenant scope while the job runs. Queues are
named by purpose; a worker serves them in priority order (webhooks first), and a
dedicated worker per queue (``crowdpower worker --queue webhooks``) keeps a big sync
from ever delaying webhook processing.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from flask import Flask, current_app, has_app_context
from redis import Redis
from rq import Queue, Retry
from sqlalchemy import event
from sqlalchemy.orm import Session
from werkzeug.utils import import_string

from crowdpower import errors, logs, metrics, workers
from crowdpower.extensions import db
from crowdpower.plugins import get_pm
from crowdpower.retry import RetryPolicy
from crowdpower.tenancy import reset_project, set_project

log = logging.getLogger(__name__)
_in_job: ContextVar[bool] = ContextVar("crowdpower_in_job", default=False)

# The host's own queue; plugins declare theirs (``crowdpower_queues``) with a priority.
HOST_QUEUES = [("default", 50)]
DEFAULT_PRIORITY = 60
_worker_app: Flask | None = None


# -- transactions -----------------------------------------------------------------

def after_commit(fn: Callable[[], Any]) -> None:
    """Run ``fn`` once the current transaction commits (dropped on rollback)."""
    db.session.info.setdefault("crowdpower_after_commit", []).append(fn)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # only a SAVEPOINT was released; the outer transaction may still roll back
    pending = session.info.pop("crowdpower_after_commit", [])
    for fn in pending:
        try:
            fn()
        except Exception:  # one failing callback must not lose the others
            log.exception("after-commit callback failed")


@event.listens_for(Session, "after_transaction_end")
def _drop_after_commit(session: Session, transaction) -> None:
    if transaction.parent is None:  # the outermost transaction ended without a commit
        session.info.pop("crowdpower_after_commit", None)


# -- running a job ----------------------------------------------------------------

def set_worker_app(app: Flask) -> None:
    global _worker_app
    _worker_app = app


def _app() -> Flask:
    if has_app_context():
        return current_app._get_current_object()  # type: ignore[attr-defined]
    if _worker_app is None:
        from crowdpower import create_app  # a cycle: the app factory imports this module

        set_worker_app(create_app())
    assert _worker_app is not None
    return _worker_app


def execute(dotted: str, project_id: int | None, args: list, kwargs: dict,
            once: str | None = None, job_id: str | None = None, *,
            app: Flask | None = None, queue: str | None = None) -> Any:
    """Entry point of every job: app context, tenant scope, commit or roll back.

    A job enqueued with ``enqueue_once`` frees its key as it starts, so whatever is
    asked after this point gets a job of its own and nothing asked before is missed.
    ``app`` and ``queue`` are given by ``run_inline`` (the app running the outer job, and
    the queue the inline job stands for in metrics).
    """
    app = app or (_worker_app if _worker_app is not None else _app())
    _after_fork(app)
    current_queue, rq_job_id = _current_job(app)
    queue = queue or current_queue
    job_id = rq_job_id or job_id
    started, outcome = time.monotonic(), "failed"
    with app.app_context():
        if once is not None:
            backend().release_once(once)
        token = set_project(project_id)
        job_token = logs.set_job_id(job_id)
        in_job = _in_job.set(True)
        errors.tag_job(project_id, job_id)
        try:
            result = import_string(dotted)(*args, **kwargs)
            db.session.commit()
            outcome = "succeeded"
            return result
        except Exception:
            db.session.rollback()
            raise
        finally:
            metrics.observe_job(queue, dotted, outcome, time.monotonic() - started)
            _in_job.reset(in_job)
            logs.reset_job_id(job_token)
            reset_project(token)
            db.session.remove()


def _current_job(app: Flask) -> tuple[str, str | None]:
    """The queue (without the installation's prefix) and id of the RQ job running now."""
    from rq import get_current_job

    job = get_current_job()
    if job is None:
        return "inprocess", None
    prefix = app.config.get("RQ_QUEUE_PREFIX", "")
    origin = job.origin or ""
    return (origin[len(prefix):] if prefix and origin.startswith(prefix) else origin), job.id


_engine_pid: dict[int, int] = {}


def _after_fork(app: Flask) -> None:
    """A forked RQ work horse must not reuse its parent's database connections."""
    pid = os.getpid()
    if _engine_pid.setdefault(id(app), pid) != pid:
        _engine_pid[id(app)] = pid
        with app.app_context():
            db.engine.dispose(close=False)


# -- backends ---------------------------------------------------------------------

class RQBackend:
    """Jobs on Redis through RQ; the worker process runs them."""

    def __init__(self, app: Flask) -> None:
        self.redis = Redis.from_url(app.config["REDIS_URL"])
        self.prefix = app.config.get("RQ_QUEUE_PREFIX", "")
        self.intervals = list(app.config["JOB_RETRY_INTERVALS"])

    def queue(self, name: str):
        return Queue(self.prefix + name, connection=self.redis)

    def claim_once(self, key: str, ttl: int) -> bool:
        return bool(self.redis.set(f"{self.prefix}crowdpower:once:{key}", b"1", nx=True,
                                   ex=ttl))

    def release_once(self, key: str) -> None:
        self.redis.delete(f"{self.prefix}crowdpower:once:{key}")

    def enqueue(self, dotted: str, args: list, kwargs: dict, *, queue: str,
                project_id: int | None, delay: float | None, job_id: str | None,
                retries: int, timeout: int | None, once: str | None = None) -> str:
        q = self.queue(queue)
        options = dict(
            args=(dotted, project_id, list(args), dict(kwargs), once),
            job_id=job_id,
            meta={"project_id": project_id, "job": dotted},
            retry=Retry(max=retries, interval=job_retry_policy(self.intervals, retries)
                        .schedule() or 0) if retries else None,
            description=f"{dotted} project={project_id}",
            timeout=timeout,
            result_ttl=3600,
            failure_ttl=7 * 24 * 3600,
        )
        if delay:
            options.pop("timeout")
            job = q.enqueue_in(timedelta(seconds=delay), execute, *options.pop("args"),
                               job_timeout=timeout, **options)
        else:
            job = q.enqueue_call(execute, **options)
        return job.id


class InProcessBackend:
    """Jobs on a background thread of this process, for running with no servers.

    Delays and retries are honoured; ``drain()`` waits until nothing is due.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.intervals = list(app.config["JOB_RETRY_INTERVALS"])
        self._heap: list = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._busy = 0
        self._thread: threading.Thread | None = None
        self._once: set[str] = set()
        self.failed: list[tuple[str, str]] = []

    def claim_once(self, key: str, ttl: int) -> bool:
        with self._cv:
            if key in self._once:
                return False
            self._once.add(key)
            return True

    def release_once(self, key: str) -> None:
        with self._cv:
            self._once.discard(key)

    def enqueue(self, dotted: str, args: list, kwargs: dict, *, queue: str,
                project_id: int | None, delay: float | None, job_id: str | None,
                retries: int, timeout: int | None, once: str | None = None) -> str:
        job_id = job_id or f"inproc-{next(self._seq)}"
        with self._cv:
            heapq.heappush(self._heap, (time.monotonic() + (delay or 0), next(self._seq),
                                        (dotted, project_id, list(args), dict(kwargs), retries,
                                         0, job_id, once)))
            self._ensure_thread()
            self._cv.notify_all()
        return job_id

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="crowdpower-jobs",
                                            daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cv.wait(timeout=wait)
                _, _, job = heapq.heappop(self._heap)
                self._busy += 1
            dotted, project_id, args, kwargs, retries, attempt, job_id, once = job
            try:
                with self.app.app_context():
                    execute(dotted, project_id, args, kwargs, once, job_id=job_id)
            except Exception as exc:
                policy = job_retry_policy(self.intervals, retries)
                if not policy.gives_up(attempt + 1):
                    interval = policy.delay(attempt + 1)
                    log.warning("job %s failed (%s); retry %d in %ss", dotted, exc,
                                attempt + 1, interval)
                    with self._cv:
                        heapq.heappush(self._heap, (
                            time.monotonic() + interval, next(self._seq),
                            (dotted, project_id, args, kwargs, retries, attempt + 1, job_id,
                             None)))
                else:
                    log.exception("job %s failed for good", dotted)
                    self.failed.append((dotted, repr(exc)))
            finally:
                with self._cv:
                    self._busy -= 1
                    self._cv.notify_all()

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until no job is due or running (tests, the CLI)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._busy or (self._heap and self._heap[0][0] <= time.monotonic()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("in-process jobs did not drain")
                self._cv.wait(timeout=min(remaining, 0.05))


def job_retry_policy(intervals: list[float], retries: int) -> RetryPolicy:
    """A job's retries: ``retries`` of them, after ``JOB_RETRY_INTERVALS``."""
    return RetryPolicy.scheduled(intervals or [0], attempts=retries + 1)


def init_app(app: Flask) -> None:
    backend = RQBackend(app) if app.config.get("REDIS_URL") else InProcessBackend(app)
    app.extensions["crowdpower.jobs"] = backend


def backend():
    return current_app.extensions["crowdpower.jobs"]


def queue_names(app: Flask | None = None) -> list[str]:
    """Every queue, highest priority first: the host's and the plugins' declared ones."""
    declared: dict[str, int] = dict(HOST_QUEUES)
    ctx = app.app_context() if app is not None else None
    if ctx:
        ctx.push()
    try:
        for extra in get_pm().hook.crowdpower_queues():
            for entry in extra or []:
                name, priority = (entry, DEFAULT_PRIORITY) if isinstance(entry, str) else entry
                declared.setdefault(name, int(priority))
    finally:
        if ctx:
            ctx.pop()
    order = {name: i for i, name in enumerate(declared)}
    return sorted(declared, key=lambda n: (declared[n], order[n]))


def resolve_queue_names(requested: list[str], app: Flask | None = None) -> list[str]:
    """Queue names as an operator types them: a full name, or a purpose without its
    plugin's namespace (``sync`` for ``billing.sync``: the names before queues were
    namespaced keep working, and the queue of that old name is served too, so jobs an
    earlier version left there still run). Declared queues come in their priority order,
    whatever order they were typed in; unknown names follow, as typed."""
    known = queue_names(app)
    out: list[str] = []
    for name in requested:
        matches = [name] if name in known else [
            q for q in known if q.rsplit(".", 1)[-1] == name] + [name]
        out += [m for m in matches if m not in out]
    rank = {q: i for i, q in enumerate(known)}
    return sorted(out, key=lambda q: (rank.get(q, len(rank)), out.index(q)))


def _dotted(func: str | Callable) -> str:
    """Jobs are referenced by dotted name (an importable function, or its name)."""
    return func if isinstance(func, str) else f"{func.__module__}.{func.__qualname__}"


def enqueue(func: str | Callable, *args: Any, queue: str = "default",
            project_id: int | None = None, delay: float | None = None,
            job_id: str | None = None, retries: int = 3, timeout: int | None = None,
            **kwargs: Any) -> str:
    """Enqueue ``func`` (a dotted name or an importable function) with plain arguments."""
    dotted = _dotted(func)
    return backend().enqueue(dotted, list(args), kwargs, queue=queue, project_id=project_id,
                             delay=delay, job_id=job_id, retries=retries, timeout=timeout)


def run_inline(func: str | Callable, *args: Any, queue: str,
               project_id: int | None = None) -> bool:
    """Run a short follow-up job right here, inside the job running now, instead of
    queueing it; True if it ran and committed.

    For work that must follow a commit at once (deciding which automations an event
    starts): queued, it would wait for a free worker behind whole drains, which is most
    of its latency. It runs through ``execute`` like any job (tenant scope, its own app
    context, so its own session and transaction; commit or roll back). Outside a job it
    does nothing, and if it fails it is logged: both return False, and the caller
    enqueues the job as usual, so retries and the queue stay the safety net. Safe from
    an ``after_commit`` callback (the committed session is not touched).
    """
    if not _in_job.get() or not has_app_context():
        return False
    try:
        execute(_dotted(func), project_id, list(args), {},
                app=current_app._get_current_object(), queue=queue)  # type: ignore[attr-defined]
    except Exception:
        log.exception("inline job %s failed; it is queued instead", _dotted(func))
        return False
    return True


def enqueue_once(func: str | Callable, *args: Any, key: str, queue: str = "default",
                 project_id: int | None = None, retries: int = 3, ttl: int = 300,
                 **kwargs: Any) -> str | None:
    """Enqueue ``func`` unless a job under ``key`` is already waiting to start.

    For "go and look at the work table" jobs (draining an inbox): a burst of requests
    costs one Redis ``SET NX`` each and a single queued job, and a tenant can have at most
    one such job waiting, so its burst cannot push other tenants' jobs back. The key is
    freed when the job starts (``execute``), or after ``ttl`` seconds if the job is lost.
    Returns the job id, or None when a waiting job already covers this request.
    """
    backend_ = backend()
    if not backend_.claim_once(key, ttl):
        return None
    dotted = _dotted(func)
    try:
        return backend_.enqueue(dotted, list(args), kwargs, queue=queue, project_id=project_id,
                                delay=None, job_id=None, retries=retries, timeout=None,
                                once=key)
    except Exception:
        try:
            backend_.release_once(key)
        except Exception:  # the queue is down; the key expires after ``ttl``
            pass
        raise


def run_periodic_jobs(app: Flask, stop: threading.Event, redis=None) -> None:
    """Enqueue plugins' periodic jobs on their timers; one enqueue per period cluster-wide."""
    with app.app_context():
        jobs = [j for batch in get_pm().hook.crowdpower_periodic_jobs() for j in batch or []]
    prefix = app.config.get("RQ_QUEUE_PREFIX", "")  # installations sharing a Redis
    last: dict[str, float] = {}
    while not stop.is_set():
        for dotted, every, queue in jobs:
            if redis is not None:
                due = redis.set(f"{prefix}crowdpower:periodic:{dotted}", "1", nx=True,
                                ex=int(every))
            else:
                due = time.monotonic() - last.get(dotted, 0) >= every
            if due:
                last[dotted] = time.monotonic()
                with app.app_context():
                    try:
                        enqueue(dotted, queue=queue, retries=0)
                    except Exception:
                        log.exception("could not enqueue periodic job %s", dotted)
        stop.wait(1.0)


def drain(app: Flask | None = None, timeout: float = 60.0) -> None:
    """Run jobs until none is left: an RQ burst worker, or wait for the thread."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    backend_ = app.extensions["crowdpower.jobs"]
    if isinstance(backend_, InProcessBackend):
        backend_.drain(timeout)
        return

    set_worker_app(app)
    queues = [backend_.queue(n) for n in queue_names(app)]
    workers.InProcessWorker(queues, connection=backend_.redis).work(burst=True, with_scheduler=True)
