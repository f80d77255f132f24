"""Subscriptions (``app.subscriptions``): start, swap with a previewed
proration, quantities, cancel and resume, pause collection, end a trial,
metered usage; and the dunning and lifecycle hooks, run once from the inbox.

::

    started = app.subscriptions.start("user_7", "price_pro", trial_days=14)
    if started.client_secret:
        ...  # the first payment needs the browser: Stripe.js confirmPayment

    preview = app.subscriptions.preview_swap(sub_id, "price_team")
    preview.amount            # the prorated amount the swap will bill
    app.subscriptions.swap(sub_id, "price_team", proration_date=preview.proration_date)

    @app.subscriptions.on_payment_failed
    def tell(failed: PaymentFailed) -> None:
        send_email(failed.email, failed.decline.message, failed.hosted_invoice_url)

Every write goes through the ledger of outgoing calls (``app.calls``) with a
reference derived from the intent: ``subscription:create`` for the customer
and the prices (or your ``reference``), ``subscription:swap`` for the
subscription, item and new price, ``subscription:quantity``,
``subscription:cancel``, ``subscription:cancel_at_period_end``,
``subscription:resume``, ``subscription:pause``, ``subscription:unpause``,
``subscription:end_trial``, ``meter_event:create`` for the usage's
identifier. The same intent again (a retry, a double click, a restarted
process) is the same call: one subscription, one change. The same intent
once done and undone since (swap A→B, B→A, then A→B again) is a new call
(``…#2``). What Stripe answered is in the mirror when the method returns.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar, cast

from stripeline.declines import DeclineAdvice, advise
from stripeline.errors import StripeAPIError, StripeInvalidRequestError, SubscriptionNotFound
from stripeline.flows._twin import in_thread
from stripeline.flows.calls import MAX_KEY_LENGTH, as_dict
from stripeline.mirror.records import Subscription

if TYPE_CHECKING:
    from stripeline.app import ReceivedEvent, Stripeline
    from stripeline.gateway import StripeClient

__all__ = [
    "DUNNING_EVENTS",
    "SUBSCRIPTION_KEY",
    "PaymentActionRequired",
    "PaymentFailed",
    "PreviewLine",
    "PriceSpec",
    "Started",
    "SubscriptionEnded",
    "Subscriptions",
    "SwapPreview",
    "TrialWillEnd",
    "UpcomingRenewal",
    "UsageReported",
    "notice_of",
]

#: The metadata key every subscription started here carries: its call's reference.
SUBSCRIPTION_KEY = "stripeline_subscription"
_USER_KEY = "stripeline_user_id"

START = "subscription:create"
SWAP = "subscription:swap"
QUANTITY = "subscription:quantity"
CANCEL = "subscription:cancel"
CANCEL_AT_END = "subscription:cancel_at_period_end"
RESUME = "subscription:resume"
PAUSE = "subscription:pause"
UNPAUSE = "subscription:unpause"
END_TRIAL = "subscription:end_trial"
METER_EVENT = "meter_event:create"

#: The events the dunning and lifecycle hooks run from.
DUNNING_EVENTS = (
    "customer.subscription.trial_will_end",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "invoice.upcoming",
    "customer.subscription.deleted",
)

_ENDED = ("canceled", "incomplete_expired")

#: A price, a ``(price, quantity)`` pair, or ``{"price": …, "quantity": …}``.
PriceSpec: TypeAlias = str | tuple[str, int] | Mapping[str, Any]
ProrationBehavior = Literal["create_prorations", "always_invoice", "none"]
PaymentBehavior = Literal[
    "default_incomplete", "allow_incomplete", "error_if_incomplete", "pending_if_incomplete"
]
PauseBehavior = Literal["void", "keep_as_draft", "mark_uncollectible"]


# -- results ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Started:
    """A subscription ``start`` made (or found made, for the same intent).

    ``client_secret`` is set when the first invoice needs the customer in the
    browser (``default_incomplete``, or 3-D Secure): hand it to Stripe.js
    (``stripe.confirmPayment``); the subscription becomes ``active`` when
    ``invoice.paid`` is processed. Never log it.
    """

    #: The subscription as the mirror holds it now.
    subscription: Subscription
    #: The call's reference (the same reference again is the same subscription).
    reference: str
    #: Stripe's status: ``trialing``, ``active``, ``incomplete``, …
    status: str
    #: The first invoice (``latest_invoice``).
    invoice_id: str | None
    #: For Stripe.js, when the first payment needs the browser.
    client_secret: str | None
    #: The first payment's PaymentIntent status, when there is one.
    payment_intent_status: str | None

    @property
    def requires_action(self) -> bool:
        """3-D Secure (or another step) is needed in the browser."""
        return self.client_secret is not None


@dataclass(frozen=True, kw_only=True)
class PreviewLine:
    """A line of an invoice preview."""

    description: str
    #: In the currency's smallest unit (negative: a credit).
    amount: int
    proration: bool
    period_start: datetime | None
    period_end: datetime | None


@dataclass(frozen=True, kw_only=True)
class SwapPreview:
    """What a swap would bill, from Stripe's invoice preview; nothing changed.

    Pass ``proration_date`` to ``swap`` to bill exactly ``amount``.
    """

    subscription_id: str
    #: The prorated amount: the proration lines' sum (negative: a credit).
    amount: int
    currency: str
    #: The previewed invoice's total (the next invoice, or the one made at
    #: once with ``always_invoice``).
    amount_due: int
    #: The moment prorated (Unix time).
    proration_date: int
    lines: tuple[PreviewLine, ...]


@dataclass(frozen=True, kw_only=True)
class UsageReported:
    """A meter event recorded by ``report_usage``."""

    event_name: str
    customer_id: str
    value: int | float
    #: The meter event's identifier (the same identifier is never counted twice).
    identifier: str
    timestamp: int


@dataclass(frozen=True, kw_only=True)
class _Notice:
    subscription_id: str | None
    customer_id: str | None
    #: The application user (``customers.ensure``'s), when the customer has one.
    user_id: str | None
    email: str | None
    name: str | None
    #: The event being processed (``event.session`` writes in its transaction).
    event: ReceivedEvent


@dataclass(frozen=True, kw_only=True)
class TrialWillEnd(_Notice):
    """``customer.subscription.trial_will_end``: the trial ends in about three days."""

    trial_end: datetime
    #: Whether a payment method is on file to charge when it ends.
    has_payment_method: bool


@dataclass(frozen=True, kw_only=True)
class PaymentFailed(_Notice):
    """``invoice.payment_failed``: a payment of a subscription's invoice failed."""

    invoice_id: str
    amount_due: int
    currency: str
    #: How many attempts were made (1 for the first).
    attempt_count: int
    #: When Stripe tries again; None when it will not (retries exhausted).
    next_attempt_at: datetime | None
    #: Where the customer can pay the invoice (with another card).
    hosted_invoice_url: str | None
    #: Why, safe to show the customer (``decline.message``).
    decline: DeclineAdvice
    #: ``subscription_create``, ``subscription_cycle``, ``subscription_update``…
    billing_reason: str | None

    @property
    def final(self) -> bool:
        """No retry is scheduled: the subscription ends or goes unpaid."""
        return self.next_attempt_at is None


@dataclass(frozen=True, kw_only=True)
class PaymentActionRequired(_Notice):
    """``invoice.payment_action_required``: the customer must authenticate."""

    invoice_id: str
    amount_due: int
    currency: str
    #: The link to open: Stripe's invoice page runs 3-D Secure.
    hosted_invoice_url: str | None
    #: Or, with Stripe.js on your page (never log it).
    client_secret: str | None


@dataclass(frozen=True, kw_only=True)
class UpcomingRenewal(_Notice):
    """``invoice.upcoming``: a renewal comes (days before, per Stripe's settings)."""

    renews_at: datetime
    amount_due: int
    currency: str
    lines: tuple[PreviewLine, ...]


@dataclass(frozen=True, kw_only=True)
class SubscriptionEnded(_Notice):
    """``customer.subscription.deleted``: the subscription is over."""

    ended_at: datetime | None
    #: ``cancellation_requested``, ``payment_failed``, ``payment_disputed``.
    reason: str | None
    feedback: str | None
    comment: str | None


N = TypeVar("N", bound=_Notice)
Hook = Callable[[N], Awaitable[None] | None]


def _time(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value not in (None, "") else None


def _prices(prices: PriceSpec | Sequence[PriceSpec]) -> list[dict[str, Any]]:
    given: Sequence[PriceSpec]
    if isinstance(prices, str | Mapping) or (
        isinstance(prices, tuple) and len(prices) == 2 and isinstance(prices[1], int)
    ):
        given = [prices]
    else:
        given = cast(Sequence[PriceSpec], prices)
    items: list[dict[str, Any]] = []
    for spec in given:
        price: Any
        if isinstance(spec, str):
            price, quantity = spec, None
        elif isinstance(spec, Mapping):
            price, quantity = spec.get("price"), spec.get("quantity")
        else:
            price, quantity = spec
        if not isinstance(price, str) or not price:
            raise ValueError("each price is a price id, (price, quantity) or a mapping")
        item: dict[str, Any] = {"price": price}
        if quantity is not None:
            if int(quantity) < 0:
                raise ValueError("a quantity is 0 or more")
            item["quantity"] = int(quantity)
        items.append(item)
    if not items:
        raise ValueError("a subscription needs at least one price")
    return items


def _lines(invoice: Mapping[str, Any]) -> tuple[PreviewLine, ...]:
    found: list[PreviewLine] = []
    for line in (invoice.get("lines") or {}).get("data") or []:
        parent = line.get("parent") or {}
        details = parent.get("subscription_item_details") or parent.get("invoice_item_details")
        proration = bool((details or {}).get("proration", line.get("proration", False)))
        period = line.get("period") or {}
        found.append(
            PreviewLine(
                description=str(line.get("description") or ""),
                amount=int(line.get("amount") or 0),
                proration=proration,
                period_start=_time(period.get("start")),
                period_end=_time(period.get("end")),
            )
        )
    return tuple(found)


def _subscription_of_invoice(invoice: Mapping[str, Any]) -> str | None:
    parent = invoice.get("parent") or {}
    details = parent.get("subscription_details") or {}
    found = details.get("subscription") or invoice.get("subscription")
    if isinstance(found, dict):
        found = found.get("id")
    return str(found) if found else None


class Subscriptions:
    """The subscriptions flow (``app.subscriptions``); see the module."""

    def __init__(self, app: Stripeline) -> None:
        self._app = app
        self._hooks: dict[str, list[Callable[[Any], Awaitable[None] | None]]] = {}

    # -- reading ------------------------------------------------------------------

    def _client(self) -> StripeClient:
        return self._app.calls.client

    def _retrieve(self, subscription_id: str) -> dict[str, Any]:
        from stripeline.gateway.client import stripe_errors

        try:
            with stripe_errors():
                return as_dict(self._client().v1.subscriptions.retrieve(subscription_id))
        except StripeInvalidRequestError as exc:
            if exc.http_status == 404:
                raise SubscriptionNotFound(
                    f"Stripe knows no subscription {subscription_id}"
                ) from exc
            raise

    def _subscription_id(self, subscription: str | Subscription) -> str:
        if isinstance(subscription, Subscription):
            return subscription.id
        if not isinstance(subscription, str) or not subscription:
            raise ValueError(
                "a subscription is its id (sub_…) or the reference it was started with"
            )
        if subscription.startswith("sub_"):
            self._app.calls.check_mode(subscription)
            return subscription
        last: str | None = None
        for reference in self._references(START, subscription):
            record = self._app.calls.record(START, reference)
            if record is not None and record.object_id:
                last = record.object_id
        if last is None:
            raise SubscriptionNotFound(
                f"no subscription was started with reference {subscription!r}"
            )
        return last

    def _references(self, action: str, base: str) -> list[str]:
        """The references of ``action`` for ``base`` recorded so far, in order."""
        found: list[str] = []
        n = 1
        while True:
            reference = base if n == 1 else f"{base}#{n}"
            if self._app.calls.record(action, reference) is None:
                return found
            found.append(reference)
            n += 1

    def _mirrored(self, data: Mapping[str, Any]) -> Subscription:
        """The subscription as the mirror holds it (the ledger just wrote it)."""
        held = self._app.mirror.subscription(str(data["id"]))
        if held is None:  # pragma: no cover - the ledger writes it in the same transaction
            raise SubscriptionNotFound(f"{data['id']} is not in the mirror")
        return held

    def get(self, subscription: str | Subscription) -> Subscription:
        """The subscription as the mirror holds it (no call to Stripe).

        Raises:
            SubscriptionNotFound: the mirror does not hold it.
            ModeMismatch: the id is of the other mode.
        """
        subscription_id = self._subscription_id(subscription)
        held = self._app.mirror.subscription(subscription_id)
        if held is None:
            raise SubscriptionNotFound(f"the mirror holds no subscription {subscription_id}")
        return held

    # -- the intent's reference -----------------------------------------------------

    def _reference(self, action: str, base: str, wanted: Callable[[str], bool]) -> str:
        """``base``, ``base#2``…: the call in flight, or the last one made while
        what it asked still holds (``wanted(reference)``); else the next, a new call."""
        if len(f"{action}:{base}") > MAX_KEY_LENGTH - 8:
            base = hashlib.sha256(base.encode()).hexdigest()[:32]
        n = 1
        while True:
            reference = base if n == 1 else f"{base}#{n}"
            record = self._app.calls.record(action, reference)
            if record is None or record.status == "pending":
                return reference
            following = f"{base}#{n + 1}"
            if self._app.calls.record(action, following) is not None:
                n += 1
                continue
            return reference if wanted(reference) else following

    def _update(
        self,
        action: str,
        subscription_id: str,
        base: str,
        params: dict[str, Any],
        wanted: Callable[[dict[str, Any]], bool],
    ) -> Subscription:
        current: dict[str, Any] = {}

        def holds(_reference: str) -> bool:
            current.update(self._retrieve(subscription_id))
            return wanted(current)

        reference = self._reference(action, base, holds)

        def send(client: StripeClient, key: str) -> Any:
            return client.v1.subscriptions.update(
                subscription_id, cast(Any, params), {"idempotency_key": key}
            )

        answer = self._run(action, reference, params, send, subscription_id)
        return self._mirrored(answer)

    def _run(
        self,
        action: str,
        reference: str,
        params: dict[str, Any],
        send: Callable[[StripeClient, str], Any],
        subscription_id: str,
    ) -> dict[str, Any]:
        try:
            return self._app.calls.run(action, reference, params, send)
        except StripeInvalidRequestError as exc:
            if exc.http_status == 404 and exc.code == "resource_missing":
                raise SubscriptionNotFound(
                    f"Stripe knows no subscription {subscription_id}"
                ) from exc
            raise

    # -- start ----------------------------------------------------------------------

    def start(
        self,
        user_id_or_customer: str,
        prices: PriceSpec | Sequence[PriceSpec],
        *,
        trial_days: int | None = None,
        trial_end: datetime | int | None = None,
        payment_behavior: PaymentBehavior = "default_incomplete",
        payment_method: str | None = None,
        coupon: str | None = None,
        promotion_code: str | None = None,
        metadata: Mapping[str, str] | None = None,
        reference: str | None = None,
    ) -> Started:
        """Start a subscription to ``prices`` for an application user (their
        customer from ``customers.ensure``) or a customer id (``cus_…``).

        ``prices``: one price id, a ``(price, quantity)`` pair, a mapping, or
        a list of those (one item each). The same customer, prices and
        options again is the same subscription (while it lives), whatever
        is retried; a customer can hold several subscriptions: another
        subscription to the same prices needs its own ``reference`` (one
        name in the account, like an order id).

        With ``payment_behavior="default_incomplete"`` (the default) the
        subscription starts ``incomplete`` until its first invoice is paid in
        the browser with ``client_secret``; a trial starts ``trialing`` at once.

        Raises:
            ValueError: no price, a negative quantity, both trial options,
                both ``coupon`` and ``promotion_code``, or a reference empty
                or holding ``#``.
            CallConflict: this reference was started with other options.
            ModeMismatch: an id given is of the other mode.
            StripeAPIError: Stripe refused (an unknown or inactive price, a
                declined card with ``error_if_incomplete``) or could not be reached.
        """
        items = _prices(prices)
        if reference is not None and (not reference or "#" in reference):
            raise ValueError("a reference is not empty and holds no '#'")
        if trial_days is not None and trial_end is not None:
            raise ValueError("give trial_days or trial_end, not both")
        if trial_days is not None and trial_days < 0:
            raise ValueError("trial_days is 0 or more")
        if coupon and promotion_code:
            raise ValueError("give a coupon or a promotion code, not both")
        user_id: str | None = None
        if user_id_or_customer.startswith("cus_"):
            customer_id = user_id_or_customer
            self._app.calls.check_mode(customer_id, payment_method)
        else:
            self._app.calls.check_mode(payment_method)
            user_id = user_id_or_customer
            customer_id = self._app.customers.ensure(user_id).id
        params: dict[str, Any] = {
            "customer": customer_id,
            "items": items,
            "payment_behavior": payment_behavior,
        }
        if trial_days is not None:
            params["trial_period_days"] = int(trial_days)
        if trial_end is not None:
            params["trial_end"] = (
                int(trial_end.timestamp()) if isinstance(trial_end, datetime) else int(trial_end)
            )
        if payment_method:
            params["default_payment_method"] = payment_method
        if coupon:
            params["discounts"] = [{"coupon": coupon}]
        if promotion_code:
            params["discounts"] = [{"promotion_code": promotion_code}]
        if payment_behavior == "default_incomplete":
            params["payment_settings"] = {"save_default_payment_method": "on_subscription"}
        signature = "+".join(f"{i['price']}x{i.get('quantity', 1)}" for i in items)
        base = reference or f"{customer_id}:{signature}"

        def live(reference: str) -> bool:
            record = self._app.calls.record(START, reference)
            if record is None or not record.object_id:
                return False
            return self._retrieve(record.object_id).get("status") not in _ENDED

        # The last start of this intent while its subscription lives; else a new one.
        ref = self._reference(START, base, live)
        params["metadata"] = {
            **{str(k): str(v) for k, v in (metadata or {}).items()},
            SUBSCRIPTION_KEY: ref,
            **({_USER_KEY: user_id} if user_id else {}),
        }

        def send(client: StripeClient, key: str) -> Any:
            return client.v1.subscriptions.create(cast(Any, params), {"idempotency_key": key})

        def find(client: StripeClient) -> Any:
            listed = client.v1.subscriptions.list(
                {"customer": customer_id, "status": "all", "limit": 100}
            )
            for found in listed.auto_paging_iter():
                if (as_dict(found).get("metadata") or {}).get(SUBSCRIPTION_KEY) == ref:
                    return found
            return None

        answer = self._app.calls.run(START, ref, params, send, find=find)
        return self._started(answer, ref)

    def _started(self, answer: Mapping[str, Any], reference: str) -> Started:
        from stripeline.gateway.client import stripe_errors

        subscription = self._mirrored(answer)
        data = subscription.data
        invoice_id = data.get("latest_invoice")
        if isinstance(invoice_id, dict):
            invoice_id = invoice_id.get("id")
        secret: str | None = None
        pi_status: str | None = None
        if invoice_id and data.get("status") in ("incomplete", "past_due"):
            with stripe_errors():
                invoice = as_dict(
                    self._client().v1.invoices.retrieve(
                        str(invoice_id), {"expand": ["confirmation_secret", "payments"]}
                    )
                )
            if invoice.get("status") == "open" and int(invoice.get("amount_due") or 0) > 0:
                secret = (invoice.get("confirmation_secret") or {}).get("client_secret")
                for payment in (invoice.get("payments") or {}).get("data") or []:
                    pi = (payment.get("payment") or {}).get("payment_intent")
                    if isinstance(pi, dict):
                        pi_status = pi.get("status")
                    elif pi:
                        with stripe_errors():
                            pi_status = as_dict(
                                self._client().v1.payment_intents.retrieve(str(pi))
                            ).get("status")
        return Started(
            subscription=subscription,
            reference=reference,
            status=str(data.get("status") or ""),
            invoice_id=str(invoice_id) if invoice_id else None,
            client_secret=secret,
            payment_intent_status=pi_status,
        )

    # -- changes ----------------------------------------------------------------------

    def _item(self, data: Mapping[str, Any], item: str | None) -> dict[str, Any]:
        items = (data.get("items") or {}).get("data") or []
        if item is None:
            if len(items) != 1:
                raise ValueError(
                    f"{data['id']} has {len(items)} items: name the one to change (item=)"
                )
            return cast(dict[str, Any], items[0])
        for candidate in items:
            if item in (candidate.get("id"), (candidate.get("price") or {}).get("id")):
                return cast(dict[str, Any], candidate)
        raise ValueError(f"{data['id']} has no item {item}")

    def preview_swap(
        self,
        subscription: str | Subscription,
        new_price: str,
        *,
        item: str | None = None,
        proration_behavior: ProrationBehavior = "create_prorations",
        proration_date: int | None = None,
    ) -> SwapPreview:
        """What ``swap`` would bill, from Stripe's invoice preview
        (``invoices.create_preview``); nothing changes.

        ``item``: the item to swap (its id or current price), needed when the
        subscription has several.

        Raises:
            SubscriptionNotFound: Stripe knows no such subscription.
            ValueError: several items and no ``item``, or no such item.
            StripeAPIError: Stripe refused the preview or could not be reached.
        """
        from stripeline.gateway.client import stripe_errors

        self._app.calls.check_mode(new_price)
        subscription_id = self._subscription_id(subscription)
        data = self._retrieve(subscription_id)
        target = self._item(data, item)
        details: dict[str, Any] = {
            "items": [{"id": target["id"], "price": new_price}],
            "proration_behavior": proration_behavior,
        }
        if proration_date is not None:
            details["proration_date"] = int(proration_date)
        with stripe_errors():
            preview = as_dict(
                self._client().v1.invoices.create_preview(
                    cast(
                        Any,
                        {
                            "customer": data["customer"],
                            "subscription": subscription_id,
                            "subscription_details": details,
                        },
                    )
                )
            )
        lines = _lines(preview)
        moment = ((preview.get("parent") or {}).get("subscription_details") or {}).get(
            "subscription_proration_date"
        ) or preview.get("subscription_proration_date")
        return SwapPreview(
            subscription_id=subscription_id,
            amount=sum(line.amount for line in lines if line.proration),
            currency=str(preview.get("currency") or data.get("currency") or ""),
            amount_due=int(preview.get("amount_due") or 0),
            proration_date=int(moment if moment is not None else (proration_date or 0)),
            lines=lines,
        )

    def swap(
        self,
        subscription: str | Subscription,
        new_price: str,
        *,
        item: str | None = None,
        proration_behavior: ProrationBehavior = "create_prorations",
        proration_date: int | None = None,
    ) -> Subscription:
        """Move an item to ``new_price``, prorated per ``proration_behavior``
        (``create_prorations``: on the next invoice; ``always_invoice``: an
        invoice now; ``none``). ``proration_date`` from ``preview_swap``
        bills exactly what was previewed.

        Raises:
            SubscriptionNotFound: Stripe knows no such subscription.
            ValueError: several items and no ``item``, or no such item.
            CallConflict: this swap is in flight with other options.
            ModeMismatch: an id given is of the other mode.
            StripeAPIError: Stripe refused (a canceled subscription, an
                inactive price) or could not be reached.
        """
        self._app.calls.check_mode(new_price)
        subscription_id = self._subscription_id(subscription)
        target = self._item(self._retrieve(subscription_id), item)
        item_id = str(target["id"])
        params: dict[str, Any] = {
            "items": [{"id": item_id, "price": new_price}],
            "proration_behavior": proration_behavior,
        }
        if proration_date is not None:
            params["proration_date"] = int(proration_date)

        def wanted(current: dict[str, Any]) -> bool:
            return bool(self._item(current, item_id).get("price", {}).get("id") == new_price)

        return self._update(
            SWAP, subscription_id, f"{subscription_id}:{item_id}:{new_price}", params, wanted
        )

    def change_quantity(
        self,
        subscription: str | Subscription,
        quantity: int,
        *,
        item: str | None = None,
        proration_behavior: ProrationBehavior = "create_prorations",
    ) -> Subscription:
        """Set an item's quantity (seats), prorated per ``proration_behavior``.

        Raises:
            SubscriptionNotFound: Stripe knows no such subscription.
            ValueError: a negative quantity; several items and no ``item``.
            StripeAPIError: Stripe refused or could not be reached.
        """
        if quantity < 0:
            raise ValueError("a quantity is 0 or more")
        subscription_id = self._subscription_id(subscription)
        target = self._item(self._retrieve(subscription_id), item)
        item_id = str(target["id"])
        params: dict[str, Any] = {
            "items": [{"id": item_id, "quantity": int(quantity)}],
            "proration_behavior": proration_behavior,
        }

        def wanted(current: dict[str, Any]) -> bool:
            return int(self._item(current, item_id).get("quantity") or 0) == quantity

        return self._update(
            QUANTITY, subscription_id, f"{subscription_id}:{item_id}:{quantity}", params, wanted
        )

    def cancel(
        self, subscription: str | Subscription, *, at_period_end: bool = True
    ) -> Subscription:
        """Cancel at the end of the period (the default: ``resume`` undoes it)
        or now (``at_period_end=False``: ``customer.subscription.deleted``).

        Raises:
            SubscriptionNotFound: Stripe knows no such subscription.
            StripeAPIError: Stripe refused (canceled already) or could not be reached.
        """
        subscription_id = self._subscription_id(subscription)
        if at_period_end:
            return self._update(
                CANCEL_AT_END,
                subscription_id,
                subscription_id,
                {"cancel_at_period_end": True},
                lambda current: (
                    bool(current.get("cancel_at_period_end")) or current.get("status") in _ENDED
                ),
            )
        params: dict[str, Any] = {}

        def send(client: StripeClient, key: str) -> Any:
            return client.v1.subscriptions.cancel(
                subscription_id, cast(Any, params), {"idempotency_key": key}
            )

        answer = self._run(CANCEL, subscription_id, params, send, subscription_id)
        return self._mirrored(answer)

    def resume(self, subscription: str | Subscription) -> Subscription:
        """Undo a scheduled cancel (``cancel(at_period_end=True)``): it renews again.

        Raises:
            SubscriptionNotFound: Stripe knows no such subscription.
            StripeAPIError: Stripe refused (it ended already) or could not be reached.
        """
        subscription_id = self._subscription_id(subscription)
        return self._update(
            RESUME,
            subscription_id,
            subscription_id,
            {"cancel_at_period_end": False},
            lambda current: (
                not current.get("cancel_at_period_end") and current.get("cancel_at") is None
            ),
        )

    def pause_collection(
        self,
        subscription: str | Subscription,
        *,
        behavior: PauseBehavior = "void",
        resumes_at: datetime | int | None = None,
    ) -> Subscription:
        """Stop collecting payments: renewals' invoices are voided (``void``),
        kept as drafts or marked uncollectible, until ``unpause`` or ``resumes_at``.

        Raises:
            SubscriptionNotFound: Stripe knows no such subscription.
            StripeAPIError: Stripe refused or could not be reached.
        """
        subscription_id = self._subscription_id(subscription)
        pause: dict[str, Any] = {"behavior": behavior}
        resumes = int(resumes_at.timestamp()) if isinstance(resumes_at, datetime) else resumes_at
        if resumes is not None:
            pause["resumes_at"] = int(resumes)

        def wanted(current: dict[str, Any]) -> bool:
            held = current.get("pause_collection") or {}
            return held.get("behavior") == behavior and held.get("resumes_at") == resumes

        return self._update(
            PAUSE,
            subscription_id,
            f"{subscription_id}:{behavior}:{resumes or ''}",
            {"pause_collection": pause},
            wanted,
        )

    def unpause(self, subscription: str | Subscription) -> Subscription:
        """Collect payments again (``pause_collection`` cleared).

        Raises:
            SubscriptionNotFound: Stripe knows no such subscription.
            StripeAPIError: Stripe refused or could not be reached.
        """
        subscription_id = self._subscription_id(subscription)
        return self._update(
            UNPAUSE,
            subscription_id,
            subscription_id,
            {"pause_collection": ""},
            lambda current: not current.get("pause_collection"),
        )

    def end_trial_now(self, subscription: str | Subscription) -> Subscription:
        """End a trial now: the first period starts and is invoiced at once.

        Raises:
            SubscriptionNotFound: Stripe knows no such subscription.
            StripeAPIError: Stripe refused or could not be reached.
        """
        subscription_id = self._subscription_id(subscription)
        return self._update(
            END_TRIAL,
            subscription_id,
            subscription_id,
            {"trial_end": "now"},
            lambda current: current.get("status") != "trialing",
        )

    # -- metered usage ----------------------------------------------------------------

    def report_usage(
        self,
        user_id_or_customer: str,
        meter_event_name: str,
        value: int | float,
        *,
        identifier: str | None = None,
        timestamp: datetime | int | None = None,
    ) -> UsageReported:
        """Record usage for a metered price as a Billing Meter event; the
        renewal invoice bills the period's usage.

        ``identifier`` names this usage (your usage record's id): the same
        identifier again is the same event, never counted twice. Without it
        each call is new usage.

        Raises:
            ValueError: a negative value, or an identifier over 100 characters.
            CustomerNotFound: the application user has no customer.
            CallConflict: this identifier was reported with another value.
            StripeAPIError: Stripe refused (no active meter for the event
                name) or could not be reached.
        """
        if value < 0:
            raise ValueError("usage is 0 or more")
        identifier = identifier or uuid.uuid4().hex
        if len(identifier) > 100:
            raise ValueError("a meter event's identifier is at most 100 characters")
        if user_id_or_customer.startswith("cus_"):
            customer_id = user_id_or_customer
            self._app.calls.check_mode(customer_id)
        else:
            customer_id = self._app.customers._customer_of(user_id_or_customer, None).id
        params: dict[str, Any] = {
            "event_name": meter_event_name,
            "identifier": identifier,
            "payload": {"stripe_customer_id": customer_id, "value": str(value)},
        }
        if timestamp is not None:
            params["timestamp"] = (
                int(timestamp.timestamp()) if isinstance(timestamp, datetime) else int(timestamp)
            )

        def send(client: StripeClient, key: str) -> Any:
            return client.v1.billing.meter_events.create(
                cast(Any, params), {"idempotency_key": key}
            )

        answer = self._app.calls.run(METER_EVENT, identifier, params, send)
        return UsageReported(
            event_name=meter_event_name,
            customer_id=customer_id,
            value=value,
            identifier=str(answer.get("identifier") or identifier),
            timestamp=int(answer.get("timestamp") or 0),
        )

    # -- dunning and lifecycle hooks ----------------------------------------------------

    def _register(self, event_type: str, hook: Callable[[Any], Any]) -> None:
        if event_type not in self._hooks:
            self._hooks[event_type] = []
            self._app.on(event_type)(self._dispatch)
        self._hooks[event_type].append(hook)

    def on_trial_will_end(self, hook: Hook[TrialWillEnd]) -> Hook[TrialWillEnd]:
        """Register ``hook`` (a decorator): once per trial, about three days
        before it ends, from ``customer.subscription.trial_will_end``."""
        self._register("customer.subscription.trial_will_end", hook)
        return hook

    def on_payment_failed(self, hook: Hook[PaymentFailed]) -> Hook[PaymentFailed]:
        """Register ``hook``: once per failed attempt of a subscription's invoice
        (``invoice.payment_failed``), with the next attempt, the invoice's
        page, the attempt count and a decline message safe to show."""
        self._register("invoice.payment_failed", hook)
        return hook

    def on_payment_action_required(
        self, hook: Hook[PaymentActionRequired]
    ) -> Hook[PaymentActionRequired]:
        """Register ``hook``: once per attempt that needs the customer to
        authenticate (``invoice.payment_action_required``), with the link to open."""
        self._register("invoice.payment_action_required", hook)
        return hook

    def on_upcoming_renewal(self, hook: Hook[UpcomingRenewal]) -> Hook[UpcomingRenewal]:
        """Register ``hook``: once per renewal, days before it (``invoice.upcoming``)."""
        self._register("invoice.upcoming", hook)
        return hook

    def on_subscription_ended(self, hook: Hook[SubscriptionEnded]) -> Hook[SubscriptionEnded]:
        """Register ``hook``: once per subscription, when it ends
        (``customer.subscription.deleted``: canceled, or retries exhausted)."""
        self._register("customer.subscription.deleted", hook)
        return hook

    def _dispatch(self, event: ReceivedEvent) -> Awaitable[None] | None:
        notice = notice_of(event, self._app)
        if notice is None:
            return None
        once_key, value = notice
        if not event.once(once_key):
            return None
        pending = [r for r in (hook(value) for hook in self._hooks.get(event.type, ())) if r]
        if not pending:
            return None

        async def finish() -> None:
            for result in pending:
                await result

        return finish()

    # -- async twins ------------------------------------------------------------------

    start_async = in_thread(start)

    get_async = in_thread(get)

    preview_swap_async = in_thread(preview_swap)

    swap_async = in_thread(swap)

    change_quantity_async = in_thread(change_quantity)

    cancel_async = in_thread(cancel)

    resume_async = in_thread(resume)

    pause_collection_async = in_thread(pause_collection)

    unpause_async = in_thread(unpause)

    end_trial_now_async = in_thread(end_trial_now)

    report_usage_async = in_thread(report_usage)


# -- the notices ------------------------------------------------------------------------


def _customer(event: ReceivedEvent, app: Stripeline, customer_id: str) -> dict[str, Any]:
    """The customer from the mirror, else read from Stripe (its own event may
    not be processed yet: events are not processed in order)."""
    held = event.mirror.get(customer_id, "customer")
    if held is not None:
        return held
    fetcher = app.fetcher
    if fetcher is None:
        return {}
    try:
        return fetcher.fetch("customer", customer_id, event.account).data or {}
    except StripeAPIError:
        return {}  # the notice goes without the customer's details


def _who(
    event: ReceivedEvent, app: Stripeline, customer_id: str | None, obj: Mapping[str, Any]
) -> dict[str, Any]:
    """The customer's email, name and application user, from the object, the
    mirror or Stripe."""
    email = obj.get("customer_email")
    name = obj.get("customer_name")
    user_id = None
    if customer_id:
        held = _customer(event, app, customer_id)
        email = email or held.get("email")
        name = name or held.get("name")
        user_id = (held.get("metadata") or {}).get(_USER_KEY)
        if user_id is None:
            users = event.mirror.users_for_customer(customer_id)
            user_id = users[0] if users else None
    return {"customer_id": customer_id, "email": email, "name": name, "user_id": user_id}


def _payments(app: Stripeline, invoice: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The invoice's payments: in the event (the sandbox includes them), else
    read from Stripe (an event's invoice does not expand them)."""
    found = (invoice.get("payments") or {}).get("data")
    if found:
        return list(found)
    if app.settings.stripe_secret_key is None:
        return []
    from stripeline.gateway.client import stripe_errors

    try:
        with stripe_errors():
            fresh = as_dict(
                app.calls.client.v1.invoices.retrieve(str(invoice["id"]), {"expand": ["payments"]})
            )
    except StripeAPIError:
        return []
    return list((fresh.get("payments") or {}).get("data") or [])


def _decline(event: ReceivedEvent, app: Stripeline, invoice: Mapping[str, Any]) -> DeclineAdvice:
    """Why an invoice's payment failed, from its PaymentIntent's last error."""
    for payment in reversed(_payments(app, invoice)):
        pi = (payment.get("payment") or {}).get("payment_intent")
        if isinstance(pi, dict):
            held: dict[str, Any] | None = pi
        elif pi:
            held = event.mirror.get(str(pi), "payment_intent")
            if held is None or not held.get("last_payment_error"):
                fetcher = app.fetcher
                if fetcher is not None:
                    try:
                        held = fetcher.fetch("payment_intent", str(pi), event.account).data
                    except StripeAPIError:
                        held = None  # the generic message is the safe answer
        else:
            continue
        error = (held or {}).get("last_payment_error") or {}
        if error:
            return advise(error.get("decline_code"), code=error.get("code"))
    return advise(None)


def notice_of(event: ReceivedEvent, app: Stripeline) -> tuple[str, _Notice] | None:
    """The typed notice of a dunning or lifecycle event and its once-key, or
    None (not a subscription's)."""
    obj = event.object
    customer = obj.get("customer")
    customer_id = customer.get("id") if isinstance(customer, dict) else customer
    if event.type == "customer.subscription.trial_will_end":
        trial_end = _time(obj.get("trial_end"))
        if trial_end is None:
            return None
        has_method = bool(obj.get("default_payment_method") or obj.get("default_source"))
        if not has_method and customer_id:
            held = _customer(event, app, str(customer_id))
            has_method = bool(
                (held.get("invoice_settings") or {}).get("default_payment_method")
                or held.get("default_source")
            )
        return f"subscription:trial_will_end:{obj['id']}:{obj.get('trial_end')}", TrialWillEnd(
            subscription_id=str(obj["id"]),
            **_who(event, app, customer_id, obj),
            event=event,
            trial_end=trial_end,
            has_payment_method=has_method,
        )
    if event.type == "customer.subscription.deleted":
        details = obj.get("cancellation_details") or {}
        return f"subscription:ended:{obj['id']}", SubscriptionEnded(
            subscription_id=str(obj["id"]),
            **_who(event, app, customer_id, obj),
            event=event,
            ended_at=_time(obj.get("ended_at")),
            reason=details.get("reason"),
            feedback=details.get("feedback"),
            comment=details.get("comment"),
        )
    subscription_id = _subscription_of_invoice(obj)
    if subscription_id is None:
        return None
    common: dict[str, Any] = {
        "subscription_id": subscription_id,
        **_who(event, app, customer_id, obj),
        "event": event,
        "amount_due": int(obj.get("amount_due") or 0),
        "currency": str(obj.get("currency") or ""),
    }
    if event.type == "invoice.payment_failed":
        attempts = int(obj.get("attempt_count") or 0)
        return f"subscription:payment_failed:{obj['id']}:{attempts}", PaymentFailed(
            **common,
            invoice_id=str(obj["id"]),
            attempt_count=attempts,
            next_attempt_at=_time(obj.get("next_payment_attempt")),
            hosted_invoice_url=obj.get("hosted_invoice_url"),
            decline=_decline(event, app, obj),
            billing_reason=obj.get("billing_reason"),
        )
    if event.type == "invoice.payment_action_required":
        attempts = int(obj.get("attempt_count") or 0)
        return f"subscription:action_required:{obj['id']}:{attempts}", PaymentActionRequired(
            **common,
            invoice_id=str(obj["id"]),
            hosted_invoice_url=obj.get("hosted_invoice_url"),
            client_secret=(obj.get("confirmation_secret") or {}).get("client_secret"),
        )
    if event.type == "invoice.upcoming":
        moment = obj.get("next_payment_attempt") or obj.get("period_end")
        renews_at = _time(moment)
        if renews_at is None:
            return None
        return f"subscription:upcoming:{subscription_id}:{moment}", UpcomingRenewal(
            **common, renews_at=renews_at, lines=_lines(obj)
        )
    return None
