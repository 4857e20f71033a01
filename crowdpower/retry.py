"""One retry policy, configured per use: how many attempts, how long to wait before
each retry (a schedule, or exponential backoff with a cap), how much random jitter to add,
and which failures are worth retrying.

Used by background jobs (``JOB_RETRY_INTERVALS``), the webhook inbox, message delivery
(``MESSAGE_RETRY_DELAYS``) and plugins' own retries (a sync's page fetches: backoff
with jitter).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def _always(_exc: BaseException) -> bool:
    return True


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all (the first included); ``failures`` below counts those made.

    The wait before retry *n* is ``delays[n - 1]`` (the last repeats) when a schedule is
    given, else ``min(cap, base * 2 ** (n - 1))``; plus up to ``jitter`` seconds at random,
    so clients that failed together do not all come back at once.
    """

    attempts: int
    delays: tuple[float, ...] = ()
    base: float = 0.0
    cap: float = float("inf")
    jitter: float = 0.0
    retryable: Callable[[BaseException], bool] = _always

    @classmethod
    def scheduled(cls, delays: Sequence[float], attempts: int | None = None,
                  **options) -> RetryPolicy:
        """Retries after each of ``delays`` (by default: one retry per delay)."""
        schedule = tuple(float(d) for d in delays)
        return cls(attempts=len(schedule) + 1 if attempts is None else attempts,
                   delays=schedule, **options)

    def delay(self, failures: int) -> float:
        """Seconds to wait before the retry that follows the ``failures``-th failure."""
        n = max(1, failures)
        if self.delays:
            wait = self.delays[min(n, len(self.delays)) - 1]
        else:
            wait = min(self.cap, self.base * 2 ** (n - 1))
        return wait + random.uniform(0, self.jitter) if self.jitter else wait

    def gives_up(self, failures: float) -> bool:
        """No retry after this many failures (fractions: failures that count less)."""
        return failures >= self.attempts

    def should_retry(self, exc: BaseException, failures: float) -> bool:
        return self.retryable(exc) and not self.gives_up(failures)

    def schedule(self) -> list[float]:
        """The waits of every retry, without jitter (for RQ's ``Retry``)."""
        return [self.delay(n) if not self.jitter else
                RetryPolicy(self.attempts, self.delays, self.base, self.cap).delay(n)
                for n in range(1, self.attempts)]
