"""Reading one object from the API for the mirror: the ``Fetcher`` port,
the SDK adapter, and an in-memory fake for tests of the ordering maths.

A ``Fetched`` carries the state and the second the read *started* (our
clock): everything Stripe did before then is in it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import stripe

from stripeline.listing import SERVICES, Reader


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


class StripeFetcher:
    """Reads objects through the official SDK (``listing.Reader``: the one
    rate-limited read path, which also pages in an invoice's lines and a
    subscription's items beyond the first ten)."""

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        reads_per_second: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # One try per read: a failed re-fetch goes back on the queue with its
        # own backoff instead of holding the worker here.
        self.reader = Reader(client, reads_per_second=reads_per_second, max_attempts=1, clock=clock)

    @property
    def reads(self) -> int:
        """API requests made so far."""
        return self.reader.reads

    def can_fetch(self, object_type: str) -> bool:
        return object_type in SERVICES

    def fetch(self, object_type: str, object_id: str, account: str | None) -> Fetched:
        data, started = self.reader.retrieve(object_type, object_id, account=account)
        return Fetched(data, started)


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
