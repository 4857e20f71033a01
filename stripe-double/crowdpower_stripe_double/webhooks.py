"""Webhook delivery, signed exactly as Stripe signs, with misbehaviour on demand.

``Stripe-Signature: t=<unix>,v1=<hex hmac-sha256(secret, "<t>.<body>")>`` with one
``v1`` per configured secret (Stripe sends several during a secret rotation).
A background thread delivers in order of due time (submission order among equals);
on demand it duplicates, drops, delays, holds-and-reorders deliveries, and ``resend``
sends an event again (same body, fresh signature), like the Dashboard's "Resend".
Failed deliveries (non-2xx or no answer) are retried a few times with a short delay,
as Stripe retries (over days); a pending retry does not hold back later events.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import random
import threading
import time
from collections import deque
from typing import Any

import requests


def sign(payload: bytes, secrets: list[str], timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header for ``payload``."""
    t = int(time.time()) if timestamp is None else timestamp
    signed = f"{t}.".encode() + payload
    parts = [f"t={t}"] + [
        "v1=" + hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets]
    return ",".join(parts)


class Webhooks:
    """The Connect webhook endpoint's delivery queue."""

    def __init__(self, url: str | None = None, secrets: list[str] | None = None) -> None:
        self._cond = threading.Condition()
        # A heap of (due, seq, event, attempt): earliest due first, FIFO among equals.
        self._queue: list[tuple[float, int, dict, int]] = []
        self._seq = itertools.count()
        self._held: list[dict] = []
        self._inflight = 0
        self._generation = 0  # bumped by configure()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._session = requests.Session()
        self.bodies: dict[str, bytes] = {}
        self.deliveries: deque[dict] = deque(maxlen=5000)
        self.configure(url=url, secrets=secrets or [])

    def configure(self, url: str | None = None, secrets: list[str] | None = None,
                  delay: float = 0.0, duplicate_rate: float = 0.0, drop_rate: float = 0.0,
                  max_attempts: int = 3, retry_delay: float = 0.5, seed: int = 0) -> None:
        """Reset delivery settings (and forget holds, pending drops and duplicates)."""
        with self._cond:
            self.url = url
            self.secrets = list(secrets if secrets is not None else getattr(self, "secrets", []))
            self.delay, self.duplicate_rate, self.drop_rate = delay, duplicate_rate, drop_rate
            self.max_attempts, self.retry_delay = max_attempts, retry_delay
            self._random = random.Random(seed)
            self._drop_next = 0
            self._duplicate_next = 0
            self._holding = False
            self._held.clear()
            self._queue.clear()
            self.deliveries.clear()
            self._generation += 1  # a delivery in flight now is not retried
            self._cond.notify_all()

    # -- misbehaviour ---------------------------------------------------------------
    def drop_next(self, n: int = 1) -> None:
        """The next ``n`` events are never delivered (until ``resend``)."""
        with self._cond:
            self._drop_next += n

    def duplicate_next(self, n: int = 1) -> None:
        """The next ``n`` events are delivered twice."""
        with self._cond:
            self._duplicate_next += n

    def hold(self) -> None:
        """Keep new events back until ``release`` (to deliver them out of order)."""
        with self._cond:
            self._holding = True

    def release(self, order: str = "reverse") -> list[str]:
        """Deliver held events: ``reverse``, ``shuffle`` or ``fifo``; returns the order."""
        with self._cond:
            held, self._held, self._holding = list(self._held), [], False
            if order == "reverse":
                held.reverse()
            elif order == "shuffle":
                self._random.shuffle(held)
            now = time.monotonic()
            for event in held:
                self._push(now, event, 1)
            self._cond.notify_all()
            return [e["id"] for e in held]

    # -- the queue ------------------------------------------------------------------
    def submit(self, event: dict) -> None:
        """Called by the state for every new event."""
        body = json.dumps(event, separators=(",", ":"), sort_keys=False).encode()
        with self._cond:
            self.bodies[event["id"]] = body
            if self.url is None:
                return
            if self._drop_next > 0:
                self._drop_next -= 1
                self._log(event, 0, None, "dropped on purpose")
                return
            if self.drop_rate and self._random.random() < self.drop_rate:
                self._log(event, 0, None, "dropped on purpose")
                return
            copies = 1
            if self._duplicate_next > 0:
                self._duplicate_next -= 1
                copies = 2
            elif self.duplicate_rate and self._random.random() < self.duplicate_rate:
                copies = 2
            for _ in range(copies):
                if self._holding:
                    self._held.append(event)
                else:
                    self._push(time.monotonic() + self.delay, event, 1)
            self._ensure_thread()
            self._cond.notify_all()

    def resend(self, event_id: str) -> None:
        """Deliver an event again (same body, new signature)."""
        body = self.bodies.get(event_id)
        if body is None:
            raise KeyError(event_id)
        with self._cond:
            self._push(time.monotonic(), json.loads(body), 1)
            self._ensure_thread()
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every queued delivery has been attempted (held ones excepted)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("webhook deliveries still pending")
                self._cond.wait(min(left, 0.05))

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def _push(self, due: float, event: dict, attempt: int) -> None:
        heapq.heappush(self._queue, (due, next(self._seq), event, attempt))

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="stripe-double-webhooks",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and (not self._queue or self._queue[0][0] > time.monotonic()):
                    wait = (self._queue[0][0] - time.monotonic()) if self._queue else 0.5
                    self._cond.wait(max(0.001, min(wait, 0.5)))
                if self._stop:
                    return
                _due, _seq, event, attempt = heapq.heappop(self._queue)
                self._inflight += 1
                url, secrets, generation = self.url, list(self.secrets), self._generation
            ok = False
            try:
                ok = self._deliver(url, secrets, event, attempt)
            finally:
                with self._cond:
                    self._inflight -= 1
                    if not ok and attempt < self.max_attempts and url \
                            and generation == self._generation:
                        self._push(time.monotonic() + self.retry_delay, event, attempt + 1)
                    self._cond.notify_all()

    def _deliver(self, url: str | None, secrets: list[str], event: dict, attempt: int) -> bool:
        if not url:
            return True
        body = self.bodies.get(event["id"]) or json.dumps(event).encode()
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                   "Stripe-Signature": sign(body, secrets)}
        started = time.monotonic()
        try:
            response = self._session.post(url, data=body, headers=headers, timeout=10)
            status, error = response.status_code, None
        except requests.RequestException as exc:
            status, error = None, f"{type(exc).__name__}: {exc}"
        self._log(event, attempt, status, error, time.monotonic() - started)
        return status is not None and 200 <= status < 300

    def _log(self, event: dict, attempt: int, status: int | None, error: str | None,
             duration: float = 0.0) -> None:
        self.deliveries.append({"event_id": event["id"], "type": event["type"],
                                "account": event.get("account"), "attempt": attempt,
                                "status": status, "error": error, "at": time.time(),
                                "duration_ms": round(duration * 1000, 2)})

    def delivered(self, event_id: str | None = None, type_: str | None = None
                  ) -> list[dict[str, Any]]:
        """Delivery attempts (optionally of one event or type), oldest first."""
        return [d for d in list(self.deliveries)
                if (event_id is None or d["event_id"] == event_id)
                and (type_ is None or d["type"] == type_)]
