"""The reader: every API read of stripeline (catch-up, backfill, the drift
check, the mirror's re-fetches) goes through a ``Reader``.

``Reader`` makes each read through one token bucket, shared by all the
threads of a job, and retries what Stripe says can be
retried (429s and 5xx, with backoff; the SDK's own retries only cover the
answers that carry ``Stripe-Should-Retry``). ``pages`` walks one object type
page by page, as Stripe lists it, completing what lists cut short: an
invoice's lines beyond the first ten, a subscription's items beyond the
first ten.

Each page carries its *marker*: the second its read started, so everything
Stripe did before then is in it (the ordering marker of a fetched state).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stripeline.core.backoff import exponential
from stripeline.core.ratelimit import TokenBucket
from stripeline.errors import StripeAPIError, StripeInvalidRequestError, StripeRateLimitError

if TYPE_CHECKING:
    import stripe

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


#: Objects per list request (Stripe's maximum).
PAGE_SIZE = 100
#: Tries of one read when Stripe answers 429 or a retryable error.
DEFAULT_MAX_ATTEMPTS = 6


@dataclass(frozen=True, slots=True)
class Lister:
    """How one object type is listed."""

    object_type: str
    #: SDK service path under ``client.v1`` whose ``list`` pages the type.
    service: str
    #: Parameters every list request carries (``status=all`` for subscriptions).
    params: tuple[tuple[str, str], ...] = ()
    #: Listed per customer (``/v1/customers/{id}/payment_methods``).
    per_customer: bool = False


#: Object types the sync jobs list, in the order they run.
LISTERS: dict[str, Lister] = {
    lister.object_type: lister
    for lister in (
        Lister("customer", "customers"),
        Lister("payment_method", "customers.payment_methods", per_customer=True),
        Lister("product", "products"),
        Lister("price", "prices"),
        # Without status=all Stripe leaves out canceled and incomplete_expired ones.
        Lister("subscription", "subscriptions", (("status", "all"),)),
        Lister("invoice", "invoices"),
        Lister("payment_intent", "payment_intents"),
        Lister("charge", "charges"),
        Lister("refund", "refunds"),
        Lister("dispute", "disputes"),
        Lister("checkout.session", "checkout.sessions"),
    )
}

#: What people may type for a type: ``customer``, ``customers``, ``checkout_sessions``…
ALIASES: dict[str, str] = {}
for _lister in LISTERS.values():
    ALIASES[_lister.object_type] = _lister.object_type
    ALIASES[_lister.object_type.replace(".", "_")] = _lister.object_type
    ALIASES[_lister.object_type + "s"] = _lister.object_type
    ALIASES[_lister.object_type.replace(".", "_") + "s"] = _lister.object_type


def resolve_types(names: tuple[str, ...] | list[str]) -> list[str]:
    """Object types from what a person typed (all of them when empty).

    Raises:
        ValueError: a name that is no listable type.
    """
    if not names:
        return list(LISTERS)
    types: list[str] = []
    for name in names:
        object_type = ALIASES.get(name.strip().lower())
        if object_type is None:
            raise ValueError(f"unknown object type {name!r}; known: {', '.join(LISTERS)}")
        if object_type not in types:
            types.append(object_type)
    return types


@dataclass(frozen=True, slots=True)
class Page:
    """Objects as listed, the second the read started, and where to resume after it."""

    items: list[dict[str, Any]]
    marker: int
    #: The ``starting_after`` that lists what follows this page (for a type
    #: listed per customer: the last customer whose objects are all in).
    cursor: str | None


def _service(client: stripe.StripeClient, path: str) -> Any:
    service: Any = client.v1
    for part in path.split("."):
        service = getattr(service, part)
    return service


def _body(result: Any) -> dict[str, Any]:
    response = result.last_response
    if response is not None and isinstance(response.data, dict):
        return dict(response.data)
    return dict(result.to_dict())  # pragma: no cover - the SDK keeps what it parsed


class Reader:
    """API reads within one shared rate limit, retried when Stripe allows.

    ``limiter`` defaults to a token bucket of ``reads_per_second`` whose
    burst is one read, so no one-second window ever holds more than
    ``reads_per_second + 1`` reads, whatever the number of threads.
    """

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        reads_per_second: float,
        account: str | None = None,
        limiter: TokenBucket | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.account = account or None
        self.limiter = limiter or TokenBucket(reads_per_second, burst=1)
        self.max_attempts = max_attempts
        self.clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        #: API requests made, retries included.
        self.reads = 0
        #: Answers 429 (rate limited) received.
        self.rate_limited = 0

    def _options(self, account: str | None = None) -> dict[str, Any]:
        account = account or self.account
        return {"stripe_account": account} if account else {}

    def call(
        self, service: str, method: str, *args: Any, account: str | None = None
    ) -> tuple[dict[str, Any], int]:
        """``client.v1.<service>.<method>(*args)``: the raw answer and the second
        the successful read started.

        Raises:
            StripeAPIError: Stripe refused the read, or kept failing.
        """
        # The SDK's errors are only needed once a read is made: importing the
        # reader (backfill, the drift check do) does not load the SDK.
        from stripeline.gateway.client import stripe_errors

        target = getattr(_service(self.client, service), method)
        for attempt in range(1, self.max_attempts + 1):
            self.limiter.acquire()
            started = int(self.clock())
            with self._lock:
                self.reads += 1
            try:
                with stripe_errors():
                    result = target(*args, options=self._options(account))
            except StripeAPIError as exc:
                limited = isinstance(exc, StripeRateLimitError)
                if limited:
                    with self._lock:
                        self.rate_limited += 1
                if attempt == self.max_attempts or not (limited or exc.retryable):
                    raise
                # 0.5 s doubling to 8 s, with jitter, as Stripe asks after a 429.
                self._sleep(exponential(attempt, initial=0.5, maximum=8.0))
                continue
            return _body(result), started
        raise AssertionError("unreachable")  # pragma: no cover

    def retrieve(
        self, object_type: str, object_id: str, *, account: str | None = None
    ) -> tuple[dict[str, Any] | None, int]:
        """One object as Stripe holds it now (None: it does not exist or is
        deleted), and the second the read started.

        Raises:
            StripeAPIError: any failure but "no such object".
        """
        try:
            data, started = self.call(SERVICES[object_type], "retrieve", object_id, account=account)
        except StripeInvalidRequestError as exc:
            if exc.http_status == 404 or exc.code == "resource_missing":
                return None, int(self.clock())
            raise
        if data.get("deleted") is True:
            return None, started
        if object_type in ("invoice", "subscription"):
            self.complete(data)
        return data, started

    def list_page(
        self, service: str, params: dict[str, Any], *parent: str
    ) -> tuple[list[dict[str, Any]], bool, int]:
        body, started = self.call(service, "list", *parent, params)
        items = [item for item in body.get("data") or [] if isinstance(item, dict)]
        return items, bool(body.get("has_more")), started

    def complete(self, obj: dict[str, Any]) -> None:
        """Page in place what a list or a retrieve cut short: an invoice's
        ``lines``, a subscription's ``items``."""
        if obj.get("object") == "invoice":
            self._complete(obj, "lines", "invoices.line_items", (obj["id"],), {})
        elif obj.get("object") == "subscription":
            self._complete(obj, "items", "subscription_items", (), {"subscription": obj["id"]})

    def _complete(
        self,
        obj: dict[str, Any],
        field: str,
        service: str,
        parent: tuple[str, ...],
        params: dict[str, Any],
    ) -> None:
        listed = obj.get(field)
        if not isinstance(listed, dict) or not listed.get("has_more"):
            return
        data = [item for item in listed.get("data") or [] if isinstance(item, dict)]
        has_more = True
        while has_more:
            query = {**params, "limit": PAGE_SIZE}
            if data:
                query["starting_after"] = data[-1]["id"]
            items, has_more, _ = self.list_page(service, query, *parent)
            data.extend(items)
            has_more = has_more and bool(items)
        obj[field] = {**listed, "data": data, "has_more": False}


def pages(
    reader: Reader,
    object_type: str,
    *,
    after: str | None = None,
    page_size: int = PAGE_SIZE,
) -> Iterator[Page]:
    """Every object of ``object_type``, page by page, newest first, resuming
    after ``after`` (a ``Page.cursor``); invoices and subscriptions complete.

    Raises:
        StripeAPIError: a read failed for good (the pages yielded stay good).
    """
    lister = LISTERS[object_type]
    if lister.per_customer:
        yield from _per_customer(reader, lister, after=after, page_size=page_size)
        return
    cursor = after
    while True:
        params: dict[str, Any] = {**dict(lister.params), "limit": page_size}
        if cursor:
            params["starting_after"] = cursor
        items, has_more, started = reader.list_page(lister.service, params)
        for item in items:
            reader.complete(item)
        if items:
            cursor = str(items[-1]["id"])
            yield Page(items, started, cursor)
        if not has_more or not items:
            return


def _per_customer(
    reader: Reader, lister: Lister, *, after: str | None, page_size: int
) -> Iterator[Page]:
    """One page per customer with objects (then one empty page per page of
    customers, to move the cursor past those without)."""
    for customers in pages(reader, "customer", after=after, page_size=page_size):
        for customer in customers.items:
            items: list[dict[str, Any]] = []
            started: int | None = None
            has_more = True
            while has_more:
                params: dict[str, Any] = {**dict(lister.params), "limit": page_size}
                if items:
                    params["starting_after"] = items[-1]["id"]
                found, has_more, read_at = reader.list_page(lister.service, params, customer["id"])
                started = read_at if started is None else started
                items.extend(found)
                has_more = has_more and bool(found)
            if items and started is not None:
                yield Page(items, started, str(customer["id"]))
        yield Page([], customers.marker, customers.cursor)
