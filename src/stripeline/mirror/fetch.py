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

from stripeline.core.ratelimit import TokenBucket
from stripeline.gateway import translate_error

#: object type → the SDK service path under ``client.v1`` that retrieves it.
SERVICES: dict[str, str] = {
    "customer": "customers",
    "payment_method": "payment_methods",
    "payment_intent": "payment_intents",
    "setup_intent": "setup_intents",
    "charge": "charges",
    "refund": "refunds",
    "product": "products",
    "price": "prices",
    "coupon": "coupons",
    "promotion_code": "promotion_codes",
    "tax_rate": "tax_rates",
    "subscription": "subscriptions",
    "subscription_item": "subscription_items",
    "subscription_schedule": "subscription_schedules",
    "invoice": "invoices",
    "invoiceitem": "invoice_items",
    "credit_note": "credit_notes",
    "dispute": "disputes",
    "checkout.session": "checkout.sessions",
    "billing_portal.session": "billing_portal.sessions",
    "payout": "payouts",
    "transfer": "transfers",
    "balance_transaction": "balance_transactions",
    "test_helpers.test_clock": "test_helpers.test_clocks",
    "webhook_endpoint": "webhook_endpoints",
}


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
    """Reads objects through the official SDK, within a token bucket."""

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        reads_per_second: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        # No burst: a burst as large as the rate would allow twice the rate in
        # one second, over Stripe's per-second limit.
        self.limiter = TokenBucket(reads_per_second, burst=1)
        self.reads = 0
        self._clock = clock

    def can_fetch(self, object_type: str) -> bool:
        return object_type in SERVICES

    def fetch(self, object_type: str, object_id: str, account: str | None) -> Fetched:
        service: Any = self.client.v1
        for part in SERVICES[object_type].split("."):
            service = getattr(service, part)
        options: dict[str, Any] = {"stripe_account": account} if account else {}
        self.limiter.acquire()
        started = int(self._clock())
        self.reads += 1
        try:
            obj = service.retrieve(object_id, options=options)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404 or exc.code == "resource_missing":
                return Fetched(None, started)
            raise translate_error(exc) from exc
        except stripe.StripeError as exc:
            raise translate_error(exc) from exc
        response = obj.last_response
        data = response.data if response is not None else obj.to_dict()
        if data.get("deleted") is True:
            return Fetched(None, started)
        return Fetched(dict(data), started)


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
