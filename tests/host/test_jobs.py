"""Background jobs through the real backend: RQ + a worker (postgres mode) or the
in-process thread (sqlite mode). Job functions below are referenced by dotted path."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from crowdpower import jobs
from crowdpower.plugins import hookimpl
from crowdpower.tenancy import current_project_id
from tests.host.conftest import wait_until

HERE = __name__


def flaky(path: str, fail_times: int) -> int:
    """Fail the first ``fail_times`` attempts; every attempt is logged to ``path``
    (a file: attempts may run in another process)."""
    log = Path(path)
    attempts = log.read_text().splitlines() if log.exists() else []
    attempt = len(attempts) + 1
    with log.open("a") as f:
        f.write(json.dumps({"attempt": attempt, "at": time.time(),
                            "project_id": current_project_id()}) + "\n")
    if attempt <= fail_times:
        raise RuntimeError(f"attempt {attempt} fails on purpose")
    return attempt


def attempts(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def is_rq(app) -> bool:
    return isinstance(app.extensions["crowdpower.jobs"], jobs.RQBackend)


def rq_job(app, job_id: str):
    from rq.job import Job

    return Job.fetch(job_id, connection=app.extensions["crowdpower.jobs"].redis)


@pytest.fixture
def log_path(tmp_path) -> Path:
    return tmp_path / "attempts.log"


def test_a_job_failing_twice_then_succeeding_ends_succeeded(app, drain, log_path):
    job_id = jobs.enqueue(f"{HERE}.flaky", str(log_path), 2, project_id=7, retries=3)
    wait_until(lambda: len(attempts(log_path)) >= 3, drain)
    drain()
    runs = attempts(log_path)
    assert [r["attempt"] for r in runs] == [1, 2, 3]
    assert {r["project_id"] for r in runs} == {7}  # in tenant scope on every attempt
    if is_rq(app):
        job = rq_job(app, job_id)
        assert job.get_status() == "finished"
        assert job.return_value() == 3
    else:
        assert app.extensions["crowdpower.jobs"].failed == []


def test_a_job_that_keeps_failing_ends_failed_after_its_retries(app, drain, log_path):
    job_id = jobs.enqueue(flaky, str(log_path), 99, retries=1)
    wait_until(lambda: len(attempts(log_path)) >= 2, drain)
    drain()
    assert [r["attempt"] for r in attempts(log_path)] == [1, 2]
    if is_rq(app):
        assert rq_job(app, job_id).get_status() == "failed"
    else:
        failed = app.extensions["crowdpower.jobs"].failed
        assert [name for name, _ in failed] == [f"{HERE}.flaky"]
        assert "attempt 2 fails" in failed[0][1]


@pytest.fixture
def backoff(app_config) -> list[float]:
    """Real waits between attempts: RQ schedules in whole seconds, the thread in any."""
    from tests.conftest import BACKEND

    intervals = [2] if BACKEND == "postgres" else [0.3, 0.6]
    app_config["JOB_RETRY_INTERVALS"] = intervals
    return intervals


def test_retries_wait_their_backoff(backoff, app, drain, log_path):
    failures = len(backoff)
    job_id = jobs.enqueue(flaky, str(log_path), failures, retries=failures)
    drain()
    assert len(attempts(log_path)) == 1  # the retry waits; a drain right away runs nothing
    if is_rq(app):
        assert rq_job(app, job_id).get_status() == "scheduled"
    wait_until(lambda: len(attempts(log_path)) > failures, drain, timeout=15)
    at = [r["at"] for r in attempts(log_path)]
    gaps = [b - a for a, b in zip(at, at[1:], strict=False)]
    # RQ stores a retry's time in whole seconds, so its wait may end up to 1 s early
    slack = 1.0 if is_rq(app) else 0.05
    assert all(gap >= wait - slack for gap, wait in zip(gaps, backoff, strict=True)), gaps
    if is_rq(app):
        assert rq_job(app, job_id).get_status() == "finished"
    else:
        assert app.extensions["crowdpower.jobs"].failed == []


def test_delayed_job_runs_later(app, drain, log_path):
    # RQ keeps the due time in whole seconds: 2 s is at least 1 s away
    jobs.enqueue(flaky, str(log_path), 0, delay=2 if is_rq(app) else 0.3, retries=0)
    drain()
    assert attempts(log_path) == []
    wait_until(lambda: len(attempts(log_path)) == 1, drain, timeout=15)


def test_project_id_travels_in_the_job_meta(app, drain, log_path):
    job_id = jobs.enqueue(flaky, str(log_path), 0, project_id=42, queue="messages")
    if is_rq(app):
        job = rq_job(app, job_id)
        assert job.meta == {"project_id": 42, "job": f"{HERE}.flaky"}
        assert job.origin == app.config["RQ_QUEUE_PREFIX"] + "messages"
        assert job.args[0] == f"{HERE}.flaky" and job.args[1] == 42  # ids, not objects
    drain()
    assert [r["project_id"] for r in attempts(log_path)] == [42]


def test_queues_are_named_by_purpose_in_priority_order(app):
    names = jobs.queue_names(app)
    assert [n for n in names if n in ("automations.dispatch", "messages", "default")] == [
        "automations.dispatch", "messages", "default"]
    assert len(names) == len(set(names))
    # plugins' queues are namespaced and placed by their declared priority
    assert all("." in n for n in names if n not in ("messages", "default"))


def test_plugin_queues_take_their_declared_priority(app):
    class Queues:
        @hookimpl
        def crowdpower_queues(self):
            return [("sample.urgent", 1), "sample.later"]

    pm = app.extensions["crowdpower.plugins"]
    plugin = Queues()
    pm.register(plugin)
    try:
        names = jobs.queue_names(app)
        assert names[0] == "sample.urgent"
        assert names.index("sample.later") > names.index("default")
        # an operator may name a queue by its purpose (the names before namespacing); the
        # queue of that old name is served too (jobs an earlier version left there)
        assert jobs.resolve_queue_names(["default", "nope", "urgent"], app) == [
            "sample.urgent", "default", "nope", "urgent"]  # declared ones by priority
    finally:
        pm.unregister(plugin)


def test_jobs_land_in_their_named_queue(app, drain, log_path):
    if not is_rq(app):
        pytest.skip("queues are an RQ notion; the in-process thread runs one list")
    backend = app.extensions["crowdpower.jobs"]
    ids = {q: jobs.enqueue(flaky, str(log_path), 0, queue=q) for q in ("automations.dispatch", "messages")}
    for q, job_id in ids.items():
        assert job_id in backend.queue(q).job_ids
        assert job_id not in backend.queue("default").job_ids
    drain()
    assert len(attempts(log_path)) == 2
    assert backend.queue("automations.dispatch").count == 0
    assert backend.queue("messages").count == 0


def record(path: str) -> None:
    with Path(path).open("a") as f:
        f.write(f"{current_project_id()}\n")


def hold(path: str) -> None:
    """Occupy a worker until ``path`` exists (so later jobs wait in the queue)."""
    deadline = time.monotonic() + 20
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_enqueue_once_keeps_one_job_waiting_per_key(app, drain, tmp_path, log_path):
    gate = tmp_path / "gate"
    jobs.enqueue(f"{HERE}.hold", str(gate), retries=0)  # the in-process thread is busy
    first = jobs.enqueue_once(f"{HERE}.record", str(log_path), key="inbox:3", project_id=3)
    again = jobs.enqueue_once(f"{HERE}.record", str(log_path), key="inbox:3", project_id=3)
    other = jobs.enqueue_once(f"{HERE}.record", str(log_path), key="inbox:4", project_id=4)
    assert first is not None and other is not None
    assert again is None  # covered by the job already waiting
    gate.touch()
    drain()
    assert sorted(log_path.read_text().split()) == ["3", "4"]
    # The key is freed as the job starts: the next ask gets a job of its own.
    assert jobs.enqueue_once(f"{HERE}.record", str(log_path), key="inbox:3",
                             project_id=3) is not None
    drain()
    assert sorted(log_path.read_text().split()) == ["3", "3", "4"]



def inline_outer(path: str, inner: str, *args) -> None:
    """A job that runs ``inner`` inline, as automations do after a recording commit;
    logs (pid, its project, the inline job's outcome, the project it sees afterwards)."""
    ran = jobs.run_inline(f"{HERE}.{inner}", *args, queue="default", project_id=42)
    with Path(path).open("a") as f:
        f.write(json.dumps({"pid": os.getpid(), "ran": ran,
                            "project_after": current_project_id()}) + "\n")


def inline_pid(path: str) -> None:
    with Path(path).open("a") as f:
        f.write(json.dumps({"pid": os.getpid(), "project_id": current_project_id()}) + "\n")


def test_run_inline_runs_in_the_job_running_now_in_its_own_scope(app, drain, tmp_path):
    outer, inner = tmp_path / "outer.log", tmp_path / "inner.log"
    jobs.enqueue(f"{HERE}.inline_outer", str(outer), "inline_pid", str(inner), project_id=7,
                 retries=0)
    wait_until(lambda: outer.exists(), drain)
    drain()
    (o,), (i,) = attempts(outer), attempts(inner)
    assert o["ran"] is True and i["pid"] == o["pid"]  # the same worker process, at once
    assert i["project_id"] == 42 and o["project_after"] == 7  # scope restored afterwards
    if is_rq(app):  # nothing went through the queue
        assert app.extensions["crowdpower.jobs"].queue("default").count == 0


def test_run_inline_fails_soft_and_does_nothing_outside_a_job(app, drain, tmp_path, log_path):
    # outside a job: nothing runs, the caller enqueues as usual
    assert jobs.run_inline(f"{HERE}.record", str(log_path), queue="default") is False
    assert not log_path.exists()
    outer = tmp_path / "outer.log"
    jobs.enqueue(f"{HERE}.inline_outer", str(outer), "flaky", str(log_path), 5,
                 project_id=7, retries=0)
    wait_until(lambda: outer.exists(), drain)
    drain()
    (o,) = attempts(outer)
    assert o["ran"] is False and o["project_after"] == 7  # failure reported, scope intact
    assert [r["project_id"] for r in attempts(log_path)] == [42]  # it did run, once
