"""``crowdpower worker``: a warm stop never drops a job the worker has popped.

RQ's own handler raises ``StopRequested`` when SIGTERM lands between a pop and the
job's start; a worker over several queues pops with plain BLPOP, so that job is lost
(its hash says ``queued``, no list or registry holds it). Real Redis, real workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rq import SimpleWorker

from crowdpower import jobs, workers

HERE = __name__
ROOT = Path(__file__).resolve().parents[2]  # the workers import this module's jobs


def mark(path: str) -> None:
    Path(path).touch()


def _stopped_right_after_a_pop(base: type) -> type:
    """``base`` with SIGTERM delivered the instant a job has been popped (the race)."""

    class Racing(base):  # type: ignore[misc, valid-type]
        def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            if result is not None:
                os.kill(os.getpid(), signal.SIGTERM)
            return result

    return Racing


@pytest.fixture
def rq_backend(app):
    backend = app.extensions["crowdpower.jobs"]
    if not isinstance(backend, jobs.RQBackend):
        pytest.skip("RQ workers only: without Redis, jobs run in-process")
    jobs.set_worker_app(app)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield backend
    for s, handler in saved.items():
        signal.signal(s, handler)


def _work(backend, worker_class: type) -> None:
    queues = [backend.queue(n) for n in jobs.queue_names()]
    worker_class(queues, connection=backend.redis).work(burst=False, with_scheduler=False)


def test_a_stop_right_after_a_pop_runs_the_popped_job_then_stops(app, rq_backend, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    a = jobs.enqueue(f"{HERE}.mark", str(first), retries=0)
    jobs.enqueue(f"{HERE}.mark", str(second), retries=0)
    _work(rq_backend, _stopped_right_after_a_pop(workers.InProcessWorker))
    assert first.exists()  # the popped job ran
    assert rq_backend.queue("default").count == 1 and not second.exists()  # then it stopped
    from rq.job import Job

    assert Job.fetch(a, connection=rq_backend.redis).get_status() == "finished"


def test_rqs_own_worker_loses_that_job(app, rq_backend, tmp_path):
    """Why ``crowdpower.workers`` exists. If this fails, RQ fixed the race: the mixin can go."""
    first = tmp_path / "first"
    a = jobs.enqueue(f"{HERE}.mark", str(first), retries=0)
    jobs.enqueue(f"{HERE}.mark", str(tmp_path / "second"), retries=0)
    _work(rq_backend, _stopped_right_after_a_pop(SimpleWorker))
    from rq.job import Job

    job = Job.fetch(a, connection=rq_backend.redis)
    assert not first.exists() and job.get_status() == "queued"
    assert a not in rq_backend.queue("default").job_ids  # gone from the list: lost


def _worker_env(app) -> dict:
    return {**os.environ, "CROWDPOWER_DEV": "1",
            "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
            "REDIS_URL": app.config["REDIS_URL"], "RQ_QUEUE_PREFIX": app.config["RQ_QUEUE_PREFIX"],
            "SECRET_KEY": app.config["SECRET_KEY"], "PYTHONPATH": str(ROOT),
            "PYTHONFAULTHANDLER": "1"}


def hold_after_mark(started: str, gate: str) -> None:
    """Say it started, then occupy the worker until ``gate`` exists."""
    Path(started).touch()
    deadline = time.monotonic() + 20
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def _start_worker(app, backend, flags: list[str]) -> subprocess.Popen:
    """A real ``crowdpower worker`` process, returned once it listens (registered)."""
    from rq import Worker as RQWorker

    exe = os.path.join(os.path.dirname(sys.executable), "crowdpower")
    proc = subprocess.Popen([exe, "worker", "--no-periodic", *flags], env=_worker_env(app),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        # other suites may share this Redis: find this process's worker
        if any(w.pid == proc.pid and w.get_state() == "idle"
               for w in RQWorker.all(connection=backend.redis)):
            return proc
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the worker never listened: {proc.stderr.read()[-2000:]}")


def _stopped(proc: subprocess.Popen) -> int:
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's stack
        proc.wait(timeout=10)
        raise AssertionError(f"no stop: {proc.stderr.read()[-6000:]}") from None


@pytest.mark.parametrize("flags", [["--simple"], []], ids=["simple", "forking"])
def test_a_busy_worker_stops_after_its_job_and_an_idle_one_at_once(app, rq_backend, tmp_path,
                                                                    flags):
    proc = _start_worker(app, rq_backend, flags)
    try:
        started, gate, done = tmp_path / "started", tmp_path / "gate", tmp_path / "done"
        jobs.enqueue(f"{HERE}.hold_after_mark", str(started), str(gate), retries=0)
        jobs.enqueue(f"{HERE}.mark", str(done), retries=0)  # waits behind it
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started.exists()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None  # still running the held job
        gate.touch()
        assert _stopped(proc) == 0
        assert not done.exists() and rq_backend.queue("default").count == 1  # left queued
    finally:
        if proc.poll() is None:
            proc.kill()
    rq_backend.queue("default").empty()
    idle = _start_worker(app, rq_backend, flags)  # nothing to run: a stop ends it promptly
    idle.send_signal(signal.SIGTERM)
    assert _stopped(idle) == 0
