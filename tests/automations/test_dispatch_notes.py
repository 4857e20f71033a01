"""A dispatch is noted with its event and the note lives until its job has run, so a
dispatch job lost after it was queued (a worker stopped between popping and starting it,
a Redis failover) is queued again by the sweep once overdue — and only then."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from crowdpower import jobs
from crowdpower.automations import engine
from crowdpower.automations.models import PendingDispatch
from crowdpower.extensions import db
from crowdpower.models import utcnow
from crowdpower.tenancy import unscoped
from tests.automations.conftest import create_automation, customer, event, messages


def _notes() -> int:
    with unscoped():
        n = db.session.scalar(select(func.count()).select_from(PendingDispatch))
    db.session.rollback()
    return n


def _sweep(drain) -> None:
    jobs.enqueue("crowdpower.automations.engine.sweep_dispatches",
                 queue=engine.DISPATCH_QUEUE)
    drain()


@pytest.mark.parametrize("inline", [20, 0], ids=["inline", "queued"])
def test_a_dispatch_note_is_deleted_by_the_job_that_ran_it(project, client, smtp, drain, app,
                                                           other_project, inline):
    app.config["AUTOMATION_INLINE_DISPATCH"] = inline
    pid, key = project
    create_automation(client, key)
    event(pid, customer(pid))
    drain()
    assert [m["state"] for m in messages(client, key)] == ["sent"]
    assert _notes() == 0
    _sweep(drain)  # nothing left to sweep: no second message
    assert len(messages(client, key)) == 1 and len(smtp.accepted) == 1
    assert messages(client, other_project[1]) == []  # another project sees none of it


def test_a_lost_dispatch_job_is_queued_again_once_overdue(project, client, smtp, drain, app):
    backend = app.extensions["crowdpower.jobs"]
    if not isinstance(backend, jobs.RQBackend):
        pytest.skip("a queued job can be lost only with Redis (in-process jobs run at once)")
    app.config["AUTOMATION_INLINE_DISPATCH"] = 0
    pid, key = project
    create_automation(client, key)
    event(pid, customer(pid))
    queue = backend.queue(engine.DISPATCH_QUEUE)
    assert queue.count == 1
    backend.redis.lpop(queue.key)  # popped by a worker that stopped before starting it
    drain()
    assert messages(client, key) == [] and _notes() == 1  # lost, but still noted

    _sweep(drain)  # queued a moment ago: not overdue yet, not queued twice
    assert messages(client, key) == [] and _notes() == 1

    late = utcnow() - timedelta(seconds=app.config["AUTOMATION_DISPATCH_SWEEP_AFTER"] + 5)
    with unscoped():
        db.session.execute(update(PendingDispatch).values(queued_at=late))
    db.session.commit()
    _sweep(drain)
    assert [m["state"] for m in messages(client, key)] == ["sent"] and len(smtp.accepted) == 1
    assert _notes() == 0
