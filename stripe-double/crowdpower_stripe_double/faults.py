"""Faults on demand: rate limits (429), server errors, slow answers, dropped connections.

Each fault applies to one account (``Stripe-Account``) or, with ``account=None``, to
every request. Checked for every API request before it is served; a faulted request
still counts in the request log (Stripe counts it against your rate limit too).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

ANY = "*"


@dataclass
class Verdict:
    """What to do with a request: answer ``status`` with an error, ``drop`` it, or serve."""

    status: int | None = None
    drop: bool = False
    delay: float = 0.0
    should_retry: bool | None = None  # the ``Stripe-Should-Retry`` header, if any


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._rates: dict[str, float] = {}
            self._buckets: dict[str, tuple[float, float]] = {}
            self._fail: dict[str, list[int]] = {}
            self._drop: dict[str, int] = {}
            self._slow: dict[str, tuple[float, int | None]] = {}

    def rate_limit(self, account: str | None = None, per_second: float = 25) -> None:
        """Answer 429 ``rate_limit`` above ``per_second`` requests (a token bucket)."""
        with self._lock:
            key = account or ANY
            self._rates[key] = float(per_second)
            self._buckets.pop(key, None)

    def fail_next(self, account: str | None = None, n: int = 1, status: int = 500,
                  should_retry: bool | None = None) -> None:
        """The next ``n`` requests fail with ``status`` (500, 502, 503…), with a
        ``Stripe-Should-Retry: true|false`` header when ``should_retry`` is given (Stripe
        sends ``false`` on some 5xx of non-idempotent requests)."""
        with self._lock:
            self._fail.setdefault(account or ANY, []).extend([(status, should_retry)] * n)

    def drop_next(self, account: str | None = None, n: int = 1) -> None:
        """The next ``n`` requests get their connection closed with no answer."""
        with self._lock:
            key = account or ANY
            self._drop[key] = self._drop.get(key, 0) + n

    def slow(self, account: str | None = None, seconds: float = 1.0,
             n: int | None = None) -> None:
        """Answer after ``seconds`` (the next ``n`` requests, or all if ``n`` is None)."""
        with self._lock:
            self._slow[account or ANY] = (seconds, n)

    def check(self, account: str | None) -> Verdict:
        keys = [k for k in (account, ANY) if k]
        with self._lock:
            verdict = Verdict()
            for key in keys:
                if self._slow.get(key):
                    seconds, n = self._slow[key]
                    verdict.delay = seconds
                    if n is not None:
                        self._slow[key] = (seconds, n - 1) if n > 1 else None  # type: ignore
                        if n <= 1:
                            del self._slow[key]
                    break
            for key in keys:
                if self._drop.get(key):
                    self._drop[key] -= 1
                    verdict.drop = True
                    return verdict
            for key in keys:
                if self._fail.get(key):
                    verdict.status, verdict.should_retry = self._fail[key].pop(0)
                    return verdict
            for key in keys:
                rate = self._rates.get(key)
                if rate:
                    now = time.monotonic()
                    tokens, ts = self._buckets.get(key, (rate, now))
                    tokens = min(rate, tokens + (now - ts) * rate)
                    if tokens < 1:
                        self._buckets[key] = (tokens, now)
                        verdict.status = 429
                        return verdict
                    self._buckets[key] = (tokens - 1, now)
            return verdict
