"""Fixtures of the sync tests: fast backoff and leases, and helpers to run a sync."""

from __future__ import annotations

import time

import pytest

from crowdpower.extensions import db


@pytest.fixture(autouse=True)
def sync_settings(stripe_double, app_config):
    """Short backoff/lease times so fault tests stay fast (set before ``app`` exists)."""
    app_config.update({
        "STRIPE_SYNC_BACKOFF_BASE": 0.02,
        "STRIPE_SYNC_BACKOFF_MAX": 0.3,
        "STRIPE_SYNC_MAX_ATTEMPTS": 4,
        "STRIPE_SYNC_LEASE_SECONDS": 2,
        "STRIPE_SYNC_DEFER_SECONDS": 0.2,
        "STRIPE_SYNC_FLUSH_OBJECTS": 200,  # two pages: tests see checkpoints mid-list
    })
    return app_config


@pytest.fixture
def wait_sync(app, drain):
    """Drain the queues until the project's latest run has ended; returns it."""
    from crowdpower.plugins.stripe.status import latest_sync

    def wait(project_id: int, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while True:
            drain(timeout)
            db.session.expire_all()
            run = latest_sync(project_id)
            if run is not None and run.state not in ("pending", "running"):
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"sync did not finish: {run and run.state}")
            time.sleep(0.1)  # a job deferred for a busy slot is due shortly

    return wait


@pytest.fixture
def start_sync(app):
    """``request_sync`` as the API does it (committed, so the job is enqueued)."""
    from crowdpower.plugins.stripe.sync import request_sync

    def start(project_id: int, reason: str = "api"):
        run, started = request_sync(project_id, reason=reason)
        db.session.commit()
        return run.id, started

    return start
