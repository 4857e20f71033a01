"""Periodic job: no sync run stays stuck.

Two ways a run can be left behind: its job was never queued (Redis was down when the
run was requested: ``pending`` forever), or its worker died mid-slice (``running`` with
a heartbeat that stopped). A heartbeat is renewed at least every third of
``STRIPE_SYNC_LEASE_SECONDS`` while a slice works, so one older than three leases means
nobody is working; between slices the heartbeat is cleared and the next slice's job is
already queued, so those runs are left alone. The sweep queues such runs again (at most
one job waiting per run, ``jobs.enqueue_once``); the job resumes from the checkpoint,
and the per-run lease keeps two workers from ever running one run at once.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import and_, or_, select

from crowdpower.plugins.stripe import sync
from crowdpower.plugins.stripe.models import StripeSyncRun
from crowdpower.services import db, enqueue_once, unscoped, utcnow

log = logging.getLogger(__name__)
PENDING_AFTER = 60   # seconds a requested run may wait for its first slice


def sweep_syncs(limit: int = 500) -> int:
    """Queue again the runs nobody is working on; returns how many."""
    now = utcnow()
    orphaned = now - timedelta(seconds=3 * float(sync.setting("STRIPE_SYNC_LEASE_SECONDS")))
    forgotten = now - timedelta(seconds=PENDING_AFTER)
    runs = StripeSyncRun
    with unscoped():  # a maintenance job across every project, by design
        rows = db.session.execute(select(runs.id, runs.project_id).where(or_(
            and_(runs.state == "pending", runs.started_at.is_(None),
                 runs.heartbeat_at.is_(None), runs.created_at < forgotten),
            and_(runs.state.in_(sync.ACTIVE), runs.heartbeat_at < orphaned),
        )).order_by(runs.id).limit(limit)).all()
    timeout = int(sync.setting("STRIPE_SYNC_SLICE_SECONDS") + 600)
    queued = 0
    for run_id, project_id in rows:
        if enqueue_once(sync.run_sync, run_id, key=f"stripe:sync-sweep:{run_id}",
                        queue=sync.QUEUE, project_id=project_id, retries=0,
                        ttl=timeout):
            queued += 1
            log.warning("sync run %s of project %s had no worker; queued again", run_id,
                        project_id)
    return queued
