"""The one backoff helper: its bounds, with the random source pinned."""

from __future__ import annotations

import pytest

from stripeline.core.backoff import exponential, scheduled


def low(a: float, b: float) -> float:
    return a


def high(a: float, b: float) -> float:
    return b


def test_exponential_doubles_up_to_the_cap_over_its_upper_half() -> None:
    waits = [exponential(n, initial=1.0, maximum=8.0, uniform=high) for n in range(1, 7)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert exponential(3, initial=1.0, maximum=8.0, uniform=low) == 2.0
    assert exponential(0, initial=1.0, maximum=8.0, uniform=high) == 1.0
    assert exponential(10_000, initial=1.0, maximum=8.0, uniform=high) == 8.0


def test_scheduled_follows_the_schedule_and_repeats_its_last_value() -> None:
    schedule = (10.0, 60.0, 300.0)
    exact = [scheduled(n, schedule, uniform=lambda a, b: 0.0) for n in (0, 1, 2, 3, 4, 50)]
    assert exact == [10.0, 10.0, 60.0, 300.0, 300.0, 300.0]
    assert scheduled(2, schedule, uniform=low) == pytest.approx(48.0)
    assert scheduled(2, schedule, uniform=high) == pytest.approx(72.0)
    assert scheduled(1, (5.0,), jitter=2.0, uniform=low) == 0.0  # never negative


def test_an_empty_schedule_means_at_once() -> None:
    assert scheduled(1, ()) == 0.0
    assert scheduled(7, [], uniform=high) == 0.0
