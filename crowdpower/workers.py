"""RQ workers whose warm stop never drops a job they have taken off a queue.

RQ's SIGTERM handler raises ``StopRequested`` whenever the worker is not BUSY, and that
includes the instant after it popped a job and before it started it. A worker that
listens to several queues pops with plain ``LPOP``/``BLPOP`` (RQ's intermediate queue
covers one queue only), so a job caught in that instant is gone: its hash says
``queued``, no list holds it, no registry knows it. A rolling restart hits it.

Here a stop is always a request: the handler only sets a flag, a job already popped
runs to its end, and the loop ends before the next pop. An idle worker waits for jobs
in short blocking pops (``STOP_POLL_SECONDS``) so it notices the request promptly. A
second signal is still RQ's cold stop (the handler RQ installs after the first one).
"""

from __future__ import annotations

import time

from rq import SimpleWorker
from rq import Worker as ForkWorker
from rq.worker import WorkerStatus

STOP_POLL_SECONDS = 1


class StopBetweenJobs:
    """Mixin for an RQ worker class: a stop request is honoured between jobs only."""

    stop_poll_seconds: int = STOP_POLL_SECONDS

    def _shutdown(self) -> None:
        if self.get_state() == WorkerStatus.BUSY:
            super()._shutdown()  # RQ's own path: flag it, note it in Redis, stop the scheduler
            return
        # Idle, or between a pop and the job's start: never raise here (that loses a
        # popped job). The pop loop below sees the flag within ``stop_poll_seconds``.
        self._stop_requested = True

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        if timeout is None:  # burst: a non-blocking pop, nothing to wait for
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        deadline = None if max_idle_time is None else time.monotonic() + max_idle_time
        while not self._stop_requested:
            wait = self.stop_poll_seconds
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                wait = max(1, min(wait, int(left)))
            # RQ's pop with ``max_idle_time=wait``: returns None after ``wait`` idle seconds.
            result = super().dequeue_job_and_maintain_ttl(wait, wait)
            if result is not None:
                return result  # taken off the queue: it runs, even if a stop came meanwhile
        return None

    def unsubscribe(self) -> None:
        """RQ's teardown, without its wait of up to a minute: RQ unsubscribes before it
        stops its pub/sub thread, and redis-py's thread, finding itself unsubscribed,
        waits ``sleep_time`` (60 s) for a subscription while ``stop()`` joins it. Here
        the thread is told to stop first, so the unsubscribe reply ends its read."""
        thread = self.pubsub_thread
        if not thread:
            return
        thread.stop(timeout=0)  # clear its running flag; do not wait yet
        self.pubsub.unsubscribe()
        thread.join(timeout=2)
        if thread.is_alive():  # a daemon thread: it cannot hold the process
            self.log.warning("Worker %s: pub/sub thread still running at exit", self.name)
        else:
            self.pubsub.close()


class Worker(StopBetweenJobs, ForkWorker):
    """RQ's forking worker (a process per job), stopping between jobs."""


class InProcessWorker(StopBetweenJobs, SimpleWorker):
    """RQ's simple worker (jobs run in the worker process), stopping between jobs."""
