"""A failure storm is a whole window of failed requests, never a few failures among successes."""

from __future__ import annotations

from loadgen.observe.failure_storm import FailureStorm


def test_a_window_of_failures_only_is_a_storm() -> None:
    storm = FailureStorm(window_s=30)
    verdicts = [storm.check(t, ok=5, failed=5 + 2 * t) for t in range(40)]
    assert verdicts[29] is None  # the window is not full yet
    assert verdicts[30] is not None
    assert "all 60 requests of the last 30 s failed" in verdicts[30]


def test_one_success_in_the_window_is_not_a_storm() -> None:
    storm = FailureStorm(window_s=30)
    verdicts = [storm.check(t, ok=5 + (t >= 20), failed=2 * t) for t in range(40)]
    assert verdicts[30] is None
    assert verdicts[39] is None  # the success at 20 s is still inside the last 30 s


def test_few_failures_are_not_a_storm() -> None:
    storm = FailureStorm(window_s=30)
    assert all(storm.check(t, ok=0, failed=t // 3) is None for t in range(40))


def test_a_zero_window_never_fires() -> None:
    storm = FailureStorm(window_s=0)
    assert all(storm.check(t, ok=0, failed=100 * t) is None for t in range(100))
