"""Per-account cap on our request rate to Stripe (100 reads/s live, 25 in test mode).

A token bucket with reservations: each request takes a token, and if the bucket is
empty the caller is told how long to wait for its turn, so concurrent callers queue
fairly instead of all retrying at once. With ``REDIS_URL`` the bucket lives in Redis
(one Lua call per request, clocked by Redis) so every worker shares one budget per
account; without Redis it is in-process. A rate of 0 turns the cap off.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from flask import Flask
from redis import Redis

# KEYS[1] bucket; ARGV rate/s, burst. Returns the wait in seconds (as a string: Lua
# numbers become integers in replies).
_RESERVE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate) - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil((burst - tokens) / rate) + 2)
if tokens >= 0 then return '0' end
return tostring(-tokens / rate)
"""


def rate_for(config, livemode: bool) -> float:
    """The configured requests/s for a live or a test-mode account (0 = no cap)."""
    key = "STRIPE_LIVE_REQUESTS_PER_SECOND" if livemode else "STRIPE_TEST_REQUESTS_PER_SECOND"
    return float(config.get(key) or 0)


class LocalBucket:
    """In-process token buckets, one per account."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def reserve(self, account: str, rate: float, burst: float) -> float:
        with self._lock:
            now = time.monotonic()
            tokens, ts = self._buckets.get(account, (burst, now))
            tokens = min(burst, tokens + max(0.0, now - ts) * rate) - 1
            self._buckets[account] = (tokens, now)
        return 0.0 if tokens >= 0 else -tokens / rate


class RedisBucket:
    """Token buckets in Redis, shared by every worker."""

    def __init__(self, url: str, prefix: str = "") -> None:
        self.redis = Redis.from_url(url)
        self.prefix = prefix
        self._script = self.redis.register_script(_RESERVE)

    def reserve(self, account: str, rate: float, burst: float) -> float:
        key = f"{self.prefix}crowdpower:stripe-rate:{account}"
        return float(self._script(keys=[key], args=[rate, burst]))


class RateLimiter:
    """``wait(account, rate)`` blocks until this request fits the account's budget."""

    def __init__(self, bucket: LocalBucket | RedisBucket,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.bucket = bucket
        self.sleep = sleep

    def wait(self, account: str, rate: float) -> float:
        if rate <= 0:
            return 0.0
        # A burst of one second's worth would let two seconds' worth through in the
        # first second; a small burst keeps every one-second window under the cap.
        burst = max(1.0, rate / 10)
        delay = self.bucket.reserve(account, rate, burst)
        if delay > 0:
            self.sleep(delay)
        return delay


def limiter(app: Flask) -> RateLimiter:
    """The app's limiter (Redis-backed when REDIS_URL is set), created once."""
    found = app.extensions.get("crowdpower.stripe.ratelimit")
    if found is None:
        url = app.config.get("REDIS_URL")
        bucket = RedisBucket(url, app.config.get("RQ_QUEUE_PREFIX", "")) if url \
            else LocalBucket()
        found = app.extensions["crowdpower.stripe.ratelimit"] = RateLimiter(bucket)
    return found
