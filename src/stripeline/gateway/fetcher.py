"""The SDK adapter of the mirror's ``Fetcher`` port (``stripeline.mirror.fetch``).

``StripeFetcher`` reads one object for the worker's re-fetches through a
``Reader``: the one rate-limited read path, which also pages in an
invoice's lines and a subscription's items beyond the first ten.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from stripeline.core.ratelimit import TokenBucket
from stripeline.gateway.reader import SERVICES, Reader
from stripeline.mirror.fetch import Fetched

if TYPE_CHECKING:
    import stripe


class StripeFetcher:
    """Reads objects through the official SDK, one try per read."""

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        reads_per_second: float,
        limiter: TokenBucket | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # One try per read: a failed re-fetch goes back on the queue with its
        # own backoff instead of holding the worker here. ``limiter`` is the
        # bucket shared with the process's other readers (``app.api_limiter``).
        self.reader = Reader(
            client,
            reads_per_second=reads_per_second,
            limiter=limiter,
            max_attempts=1,
            clock=clock,
        )

    @property
    def reads(self) -> int:
        """API requests made so far."""
        return self.reader.reads

    def can_fetch(self, object_type: str) -> bool:
        return object_type in SERVICES

    def fetch(self, object_type: str, object_id: str, account: str | None) -> Fetched:
        data, started = self.reader.retrieve(object_type, object_id, account=account)
        return Fetched(data, started)
