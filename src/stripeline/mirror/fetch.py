"""Reading one object from the API for the mirror: the ``Fetcher`` port and
an in-memory fake for tests of the ordering maths.

The adapter that reads through the official SDK is
``stripeline.gateway.StripeFetcher``. A ``Fetched`` carries the state and the
second the read *started* (our clock): everything Stripe did before then is
in it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Fetched:
    """An object as read from the API (None: it no longer exists)."""

    data: dict[str, Any] | None
    fetched_at: int


class Fetcher(Protocol):
    def can_fetch(self, object_type: str) -> bool: ...

    def fetch(self, object_type: str, object_id: str, account: str | None) -> Fetched:
        """Read one object. Raises ``StripeAPIError`` (``retryable`` says whether
        to try again) for anything but "no such object"."""
        ...


class MemoryFetcher:
    """Stripe's truth kept in a dict, for tests: ``truth[(account, id)] = object``.

    An id absent from ``truth`` reads as deleted. ``reads`` counts calls.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.truth: dict[tuple[str, str], dict[str, Any]] = {}
        self.reads = 0
        self._clock = clock

    def can_fetch(self, object_type: str) -> bool:
        return True

    def fetch(self, object_type: str, object_id: str, account: str | None) -> Fetched:
        self.reads += 1
        data = self.truth.get((account or "", object_id))
        return Fetched(dict(data) if data is not None else None, int(self._clock()))
