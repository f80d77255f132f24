"""Backoff: how long to wait before the next try, in one place.

Two shapes, both with jitter so that many processes failing together do not
come back together:

* ``exponential(failures, initial=…, maximum=…)``: doubling from ``initial``
  up to ``maximum``, spread over the upper half of that value. Used for API
  reads after a 429 or 5xx, for catch-up after a failed run, and for the
  worker's polling and LISTEN loops after a database error.
* ``scheduled(attempt, schedule)``: the inbox's retry schedule for a failed
  event (``STRIPELINE_RETRY_SCHEDULE``), its last value repeating, ±20%.

Pure: the random source is injectable for tests.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

Uniform = Callable[[float, float], float]

_uniform: Uniform = random.uniform


def exponential(
    failures: int,
    *,
    initial: float,
    maximum: float,
    uniform: Uniform = _uniform,
) -> float:
    """Seconds to wait after ``failures`` consecutive failures (1-based).

    ``initial`` after the first, doubling up to ``maximum``, then multiplied by
    a factor drawn from [0.5, 1.0] (jitter over the upper half: never longer
    than the cap, never shorter than half of it).
    """
    exponent = min(max(0, failures - 1), 62)  # 2**62 is past any cap; avoids overflow
    base = min(maximum, initial * 2.0**exponent)
    return base * uniform(0.5, 1.0)


def scheduled(
    attempt: int,
    schedule: Sequence[float],
    *,
    jitter: float = 0.2,
    uniform: Uniform = _uniform,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    The schedule's last value repeats; ``jitter`` spreads retries by ±20% so a
    burst of failures does not come back as a burst. An empty schedule means
    "at once".
    """
    if not schedule:
        return 0.0
    base = schedule[min(max(attempt, 1), len(schedule)) - 1]
    return max(0.0, base * (1 + uniform(-jitter, jitter)))
