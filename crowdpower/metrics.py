"""Prometheus metrics: the host's instruments, plugins' through a hook, and ``/metrics``.

Counters and histograms live in ``prometheus_client``; with ``PROMETHEUS_MULTIPROC_DIR``
set (required under gunicorn with several workers, and for RQ workers whose work horses
fork) every process writes its values to files in that directory and ``/metrics`` adds
them up, so one scrape of any web process sees the whole installation. Gauges of work
tables (backlogs, ages, queue depths) are measured when scraped, by collectors, never
kept in a process. ``CROWDPOWER_METRICS=off`` turns every instrument into a no-op.

Labels stay bounded: outcomes, states, queues, job and event types. Never a customer,
an account or an event id; a project only in the top-N backlog gauge
(``METRICS_TOP_PROJECTS``).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request

from crowdpower.auth import sessionless

log = logging.getLogger(__name__)

ENABLED = os.environ.get("CROWDPOWER_METRICS", "on").strip().lower() not in (
    "0", "off", "false", "no")
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
# Label names that would grow with tenants' data (unbounded series): refused at declaration.
FORBIDDEN_LABELS = frozenset({"customer", "customer_id", "email", "account", "account_id",
                              "event_id", "message_id", "user", "user_id", "request_id"})

_declared: dict[str, Any] = {}


class _Noop:
    """An instrument that records nothing (``CROWDPOWER_METRICS=off``)."""

    def labels(self, *_a: Any, **_k: Any) -> _Noop:
        return self

    def inc(self, *_a: Any, **_k: Any) -> None:
        pass

    def observe(self, *_a: Any, **_k: Any) -> None:
        pass


def _check(name: str, labels: Iterable[str]) -> None:
    if not name.startswith("crowdpower_"):
        raise ValueError(f"metric {name!r}: names start with 'crowdpower_'")
    bad = FORBIDDEN_LABELS.intersection(labels)
    if bad:
        raise ValueError(f"metric {name!r}: unbounded label(s) {sorted(bad)}")


def counter(name: str, documentation: str, labels: Iterable[str] = ()) -> Any:
    """A counter (``name`` without ``_total``); the same name gives the same instrument."""
    return _declare("counter", name, documentation, tuple(labels))


def histogram(name: str, documentation: str, labels: Iterable[str] = (),
              buckets: tuple[float, ...] | None = None) -> Any:
    """A histogram of durations or sizes."""
    return _declare("histogram", name, documentation, tuple(labels), buckets)


def _declare(kind: str, name: str, documentation: str, labels: tuple[str, ...],
             buckets: tuple[float, ...] | None = None) -> Any:
    _check(name, labels)
    if name in _declared:
        return _declared[name]
    if not ENABLED:
        instrument: Any = _Noop()
    elif kind == "counter":
        from prometheus_client import Counter

        instrument = Counter(name, documentation, labels)
    else:
        from prometheus_client import Histogram

        options = {"buckets": buckets} if buckets else {}
        instrument = Histogram(name, documentation, labels, **options)
    _declared[name] = instrument
    return instrument


def declared() -> dict[str, Any]:
    """Every instrument declared so far, by name (``crowdpower ops metrics``)."""
    return dict(_declared)


# -- the host's instruments -------------------------------------------------------------

JOB_SECONDS = histogram(
    "crowdpower_job_duration_seconds", "Background jobs by queue, job and outcome.",
    ["queue", "job", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
MESSAGES = counter("crowdpower_messages",
                   "Automation messages reaching a state (sent, failed, skipped, retry, …).",
                   ["state", "channel"])
LOGIN_THROTTLED = counter("crowdpower_login_throttled",
                          "Login attempts refused by the login throttle (HTTP 429).")
HTTP_REQUESTS = counter("crowdpower_http_requests",
                        "HTTP responses by blueprint and status class.",
                        ["blueprint", "status"])


def observe_job(queue: str, job: str, outcome: str, seconds: float) -> None:
    JOB_SECONDS.labels(queue=queue, job=job, outcome=outcome).observe(seconds)


# -- scraping ---------------------------------------------------------------------------

def _host_collectors(app: Flask) -> list[Callable[[], Iterable[Any]]]:
    return [_queue_depths, _message_states]


def _queue_depths() -> Iterable[Any]:
    """Jobs waiting, scheduled and failed per queue, and RQ workers alive (Redis only)."""
    from prometheus_client.core import GaugeMetricFamily

    from crowdpower import jobs

    backend = jobs.backend()
    if not isinstance(backend, jobs.RQBackend):
        return []
    from rq import Worker
    from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

    depth = GaugeMetricFamily("crowdpower_queue_jobs", "Jobs per queue and state (RQ).",
                              labels=["queue", "state"])
    for name in jobs.queue_names(current_app._get_current_object()):
        q = backend.queue(name)
        depth.add_metric([name, "queued"], q.count)
        depth.add_metric([name, "started"], StartedJobRegistry(queue=q).count)
        depth.add_metric([name, "scheduled"], ScheduledJobRegistry(queue=q).count)
        depth.add_metric([name, "failed"], FailedJobRegistry(queue=q).count)
    prefix = backend.prefix
    workers = [w for w in Worker.all(connection=backend.redis)
               if any(q.name.startswith(prefix) for q in w.queues)] if prefix else \
        Worker.all(connection=backend.redis)
    alive = GaugeMetricFamily("crowdpower_workers", "RQ workers registered for our queues.")
    alive.add_metric([], len(workers))
    return [depth, alive]


def _message_states() -> Iterable[Any]:
    from prometheus_client.core import GaugeMetricFamily
    from sqlalchemy import func, select

    from crowdpower.automations.models import Message
    from crowdpower.extensions import db
    from crowdpower.tenancy import unscoped

    with unscoped():
        rows = db.session.execute(select(Message.state, Message.channel, func.count())
                                  .group_by(Message.state, Message.channel)).all()
    db.session.commit()
    family = GaugeMetricFamily("crowdpower_message_rows",
                               "Automation messages stored, by state and channel.",
                               labels=["state", "channel"])
    for state, channel, count in rows:
        family.add_metric([state, channel or ""], count)
    return [family]


class _ScrapeCollector:
    """Runs the host's and plugins' scrape-time collectors inside the app."""

    def __init__(self, app: Flask, collectors: list[Callable[[], Iterable[Any]]]) -> None:
        self.app, self.collectors = app, collectors

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        errors = GaugeMetricFamily("crowdpower_scrape_collector_errors",
                                   "Collectors that failed during this scrape.")
        failed = 0
        for collect in self.collectors:
            try:
                yield from collect()
            except Exception:
                failed += 1
                log.exception("metrics collector %s failed", getattr(collect, "__name__", "?"))
                from crowdpower.extensions import db

                db.session.rollback()
        errors.add_metric([], failed)
        yield errors


def render(app: Flask) -> tuple[bytes, str]:
    """The exposition text: every process's instruments, then the scrape-time gauges."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    registry = CollectorRegistry(auto_describe=False)
    directory = app.config.get("PROMETHEUS_MULTIPROC_DIR")
    sources: list[Any] = []
    if directory:
        from prometheus_client.multiprocess import MultiProcessCollector

        sources.append(MultiProcessCollector(None, path=directory))
    if not (directory and MULTIPROCESS_DIR):  # this process keeps its values in memory
        sources.append(REGISTRY)
    registry.register(_Summed(sources))
    registry.register(_ScrapeCollector(app, app.extensions["crowdpower.metrics"]))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Summed:
    """The families of several sources, samples with the same name and labels added up
    (the worker processes' files plus this process's memory, when it keeps its own)."""

    def __init__(self, sources: list[Any]) -> None:
        self.sources = sources

    def collect(self):
        families: dict[str, Any] = {}
        values: dict[str, dict[tuple, Any]] = {}
        for source in self.sources:
            for family in source.collect():
                families.setdefault(family.name, family)
                merged = values.setdefault(family.name, {})
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    if key in merged and family.type != "gauge":
                        merged[key] = merged[key]._replace(value=merged[key].value
                                                           + sample.value)
                    else:
                        merged[key] = sample
        for name, family in families.items():
            family.samples = list(values[name].values())
            yield family


bp = Blueprint("metrics", __name__)


def _allowed() -> bool:
    token = current_app.config.get("METRICS_TOKEN")
    if token:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
    try:  # no token: loopback scrapers only (a sidecar, or a local Prometheus agent)
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


@bp.get("/metrics")
@sessionless
def metrics_view():
    if not _allowed():
        return Response("metrics need METRICS_TOKEN (Authorization: Bearer) or a loopback "
                        "client\n", status=403, mimetype="text/plain")
    started = time.monotonic()
    body, content_type = render(current_app._get_current_object())
    log.debug("metrics rendered in %.1f ms", (time.monotonic() - started) * 1000)
    return Response(body, content_type=content_type)


def init_app(app: Flask) -> None:
    """Collect plugins' metrics (``crowdpower_metrics``) and serve ``/metrics``."""
    from crowdpower.plugins import get_pm_for

    app.config.setdefault("METRICS_TOKEN", os.environ.get("METRICS_TOKEN") or None)
    app.config.setdefault("PROMETHEUS_MULTIPROC_DIR", MULTIPROCESS_DIR)
    app.config.setdefault("METRICS_TOP_PROJECTS",
                          int(os.environ.get("METRICS_TOP_PROJECTS") or 10))
    collectors = _host_collectors(app)
    for batch in get_pm_for(app).hook.crowdpower_metrics():
        for item in batch or []:
            if callable(item) and not hasattr(item, "labels"):
                collectors.append(item)
            # instruments are declared with counter()/histogram(), which checked them
    app.extensions["crowdpower.metrics"] = collectors
    app.register_blueprint(bp)

    @app.after_request
    def _count_response(response):
        status = response.status_code
        HTTP_REQUESTS.labels(blueprint=request.blueprint or "", status=f"{status // 100}xx").inc()
        if status == 429 and request.endpoint == "web.login":
            LOGIN_THROTTLED.inc()
        return response
    from crowdpower.extensions import csrf

    csrf.exempt(metrics_view)
