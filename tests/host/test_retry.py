"""The one retry policy: schedules, backoff with a cap, jitter, and what is retryable."""

from __future__ import annotations

from crowdpower.retry import RetryPolicy


def test_a_schedule_gives_one_retry_per_delay_and_repeats_the_last():
    policy = RetryPolicy.scheduled([10, 60, 300])
    assert policy.attempts == 4
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [10, 60, 300, 300]
    assert [policy.gives_up(n) for n in (1, 3, 4)] == [False, False, True]
    assert RetryPolicy.scheduled([5], attempts=3).schedule() == [5, 5]


def test_backoff_doubles_up_to_its_cap_with_bounded_jitter():
    plain = RetryPolicy(attempts=8, base=0.5, cap=3.0)
    assert [plain.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    jittered = RetryPolicy(attempts=8, base=0.5, cap=3.0, jitter=0.5)
    waits = [jittered.delay(2) for _ in range(200)]
    assert all(1.0 <= w <= 1.5 for w in waits) and len(set(waits)) > 1
    assert jittered.schedule() == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0]


def test_only_retryable_failures_are_retried_and_fractions_count():
    class Transient(Exception):
        pass

    policy = RetryPolicy.scheduled([1, 2], retryable=lambda e: isinstance(e, Transient))
    assert policy.should_retry(Transient(), 1)
    assert not policy.should_retry(ValueError(), 1)
    assert not policy.should_retry(Transient(), 3)
    assert not policy.gives_up(2.95)  # e.g. rate limits that count a twentieth each
