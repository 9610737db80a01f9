"""The retry decision alone (``bdurable.retry``): the one place that decides, for dispatchers and reapers."""

from __future__ import annotations

from bdurable.retry import MAX_BACKOFF_MS, RetryPolicy


def test_backoff_doubles_per_attempt_with_at_most_ten_percent_jitter() -> None:
    policy = RetryPolicy(max_attempts=5, backoff_ms=1000)
    assert [policy.delay_after(n, rng=lambda: 0.0) for n in range(1, 5)] == [1000, 2000, 4000, 8000]
    assert [policy.delay_after(n, rng=lambda: 0.5) for n in range(1, 5)] == [1050, 2100, 4200, 8400]


def test_no_attempt_is_left_after_the_last_one() -> None:
    policy = RetryPolicy(max_attempts=3, backoff_ms=50)
    assert policy.delay_after(2) is not None
    assert policy.delay_after(3) is None
    assert policy.delay_after(4) is None


def test_a_non_retryable_failure_is_given_up_at_once() -> None:
    assert RetryPolicy(max_attempts=10, backoff_ms=50).delay_after(1, retryable=False) is None


def test_the_backoff_is_capped_at_five_minutes_plus_jitter() -> None:
    policy = RetryPolicy(max_attempts=100, backoff_ms=1000)
    assert policy.delay_after(40, rng=lambda: 0.0) == MAX_BACKOFF_MS == 300_000
    assert policy.delay_after(99, rng=lambda: 0.5) == 315_000
