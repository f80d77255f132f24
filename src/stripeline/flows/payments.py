"""Payments: a PaymentIntent per order through its whole lifecycle
(``app.payments``), with typed outcomes, bounded refunds and fulfilment
exactly once.

::

    outcome = app.payments.start("order_42", 2000, "usd", payment_method="pm_card_visa")
    match outcome:
        case Succeeded():
            ...  # paid; fulfilment runs from the webhook, not from here
        case RequiresAction(client_secret=secret):
            ...  # hand the secret to Stripe.js for 3-D Secure
        case Declined(user_message=message):
            ...  # show the message; it never coaches a fraudster

    @app.payments.fulfil
    def ship(fulfilment: Fulfilment) -> None:
        ...  # once per order, when payment_intent.succeeded is processed

Every write goes through the ledger of outgoing calls (``app.calls``):

* ``payment_intent:create`` for the order: one PaymentIntent per order,
  whatever is retried or lost, stamped ``metadata["stripeline_order_id"]``;
  the same order with another amount is a ``CallConflict``.
* ``payment_intent:confirm`` for the order and payment method: a confirmation
  whose answer was lost is sent again with the same key; one that finished
  (declined, or 3-D Secure failed) is made anew only when the PaymentIntent
  awaits a payment method again.
* ``payment_intent:capture`` and ``payment_intent:cancel`` for the order.
* ``refund:create`` for the order, the refund's reference and its amount:
  admitted one at a time per order (across processes), so the refunds
  recorded plus this one never exceed what was received (``NotRefundable``
  otherwise, before anything is sent).

Every method takes the order id, or the PaymentIntent's id (``pi_…``).

Connect (direct charges): every method takes ``account=`` (a connected
account's id, ``acct_…``). The calls then carry ``Stripe-Account``, are
recorded under that account (the same order id on the platform and on a
connected account, or on two accounts, are separate payments), and what
Stripe answers is mirrored under it. An order or a PaymentIntent of another
account is not found (``PaymentNotFound``), never acted on.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast

from sqlalchemy import Connection, select

from stripeline.db.engine import connect
from stripeline.declines import NextAction, advise
from stripeline.errors import (
    CallConflict,
    NotRefundable,
    PaymentNotFound,
    StripeCardError,
)
from stripeline.flows._twin import in_thread
from stripeline.flows.calls import (
    as_dict,
    calls,
    check_account,
    request_options,
    write_to_mirror,
)
from stripeline.inbox import utcnow

if TYPE_CHECKING:
    from stripeline.app import ReceivedEvent, Stripeline
    from stripeline.gateway import StripeClient

__all__ = [
    "FULFILLING_EVENTS",
    "ORDER_KEY",
    "REFUND_KEY",
    "Canceled",
    "Declined",
    "Fulfilment",
    "PaymentOutcome",
    "Payments",
    "Processing",
    "Refunded",
    "RequiresAction",
    "RequiresCapture",
    "RequiresConfirmation",
    "RequiresPaymentMethod",
    "Succeeded",
    "fulfilment_of",
    "outcome_of",
]

#: The metadata key every PaymentIntent made here carries: the order's id.
ORDER_KEY = "stripeline_order_id"
#: The metadata key every refund made here carries: its call in the ledger.
REFUND_KEY = "stripeline_refund"

CREATE = "payment_intent:create"
CONFIRM = "payment_intent:confirm"
CAPTURE = "payment_intent:capture"
CANCEL = "payment_intent:cancel"
REFUND = "refund:create"

#: The events that fulfil an order (a Checkout Session only when paid).
FULFILLING_EVENTS = (
    "payment_intent.succeeded",
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
)

_AWAITING = ("requires_payment_method", "requires_confirmation")
#: Past confirmation: a payment method given again confirms nothing.
_SETTLED = ("succeeded", "processing", "requires_capture", "canceled")

Capture = Literal["automatic", "manual"]


# -- outcomes -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Outcome:
    #: The PaymentIntent (``pi_…``).
    payment_intent_id: str
    #: The order it pays (``metadata["stripeline_order_id"]``; the
    #: PaymentIntent's id for one made elsewhere).
    order_id: str
    #: The amount asked, in the currency's smallest unit.
    amount: int
    currency: str
    #: Stripe's status of the PaymentIntent.
    status: str


@dataclass(frozen=True, kw_only=True)
class Succeeded(_Outcome):
    """Paid: the money was received (``amount_received``)."""

    amount_received: int


@dataclass(frozen=True, kw_only=True)
class RequiresAction(_Outcome):
    """The customer must authenticate (3-D Secure): hand ``client_secret`` to
    Stripe.js (``stripe.handleNextAction``), or send them to ``redirect_url``."""

    client_secret: str
    #: ``next_action.type`` (``use_stripe_sdk``, ``redirect_to_url``, …).
    next_action_type: str | None = None
    redirect_url: str | None = None


@dataclass(frozen=True, kw_only=True)
class Processing(_Outcome):
    """The payment is on its way (bank debits take days): wait for the webhook."""


@dataclass(frozen=True, kw_only=True)
class RequiresCapture(_Outcome):
    """Authorised, not captured yet (``capture="manual"``): ``capture`` or ``cancel`` it."""

    amount_capturable: int


@dataclass(frozen=True, kw_only=True)
class Declined(_Outcome):
    """The payment method was declined. ``user_message`` is safe to show the
    customer (codes that would coach a fraudster read as a generic decline);
    ``decline_code`` is for your logs."""

    #: The issuer's decline code (``insufficient_funds``, …), "" when none.
    decline_code: str
    #: Stripe's error code (``card_declined``, ``expired_card``, …).
    code: str | None
    user_message: str
    next_action: NextAction
    #: True when the real reason is withheld from the customer.
    generic: bool
    #: To try again with another payment method from the browser.
    client_secret: str | None = None


@dataclass(frozen=True, kw_only=True)
class RequiresPaymentMethod(_Outcome):
    """The PaymentIntent waits for a payment method (none given yet, or
    authentication failed): collect one with ``client_secret``."""

    client_secret: str
    #: Why the last attempt failed, when one did (``payment_intent_authentication_failure``).
    last_error_code: str | None = None


@dataclass(frozen=True, kw_only=True)
class RequiresConfirmation(_Outcome):
    """A payment method is attached and the PaymentIntent waits to be
    confirmed (``confirm``)."""

    client_secret: str


@dataclass(frozen=True, kw_only=True)
class Canceled(_Outcome):
    """Canceled: nothing will be charged (an authorisation is released)."""

    cancellation_reason: str | None = None


PaymentOutcome: TypeAlias = (
    Succeeded
    | RequiresAction
    | Processing
    | RequiresCapture
    | Declined
    | RequiresPaymentMethod
    | RequiresConfirmation
    | Canceled
)


@dataclass(frozen=True, kw_only=True)
class Refunded:
    """A refund made by ``Payments.refund``."""

    refund_id: str
    payment_intent_id: str
    order_id: str
    amount: int
    currency: str
    #: Stripe's status of the refund (``succeeded``, ``pending``, ``failed``, …).
    status: str
    reason: str | None
    #: This refund's reference (the same reference again is the same refund).
    reference: str


@dataclass(frozen=True)
class Fulfilment:
    """An order paid, handed to the ``fulfil`` hook once."""

    order_id: str
    payment_intent_id: str | None
    #: The amount received, in the currency's smallest unit.
    amount: int
    currency: str
    customer: str | None
    #: The event being processed: ``event.session`` / ``event.connection``
    #: write in its transaction (committed with it, or not at all).
    event: ReceivedEvent
    #: The connected account whose order was paid (``acct_…``: the event came
    #: through the Connect endpoint), None for the platform's own.
    account: str | None = None


FulfilHook = Callable[[Fulfilment], Awaitable[None] | None]


def outcome_of(payment_intent: Mapping[str, Any], order_id: str | None = None) -> PaymentOutcome:
    """The typed outcome of a PaymentIntent (as Stripe's JSON)."""
    pi = payment_intent
    common: dict[str, Any] = {
        "payment_intent_id": str(pi["id"]),
        "order_id": order_id or _order_of(pi),
        "amount": int(pi.get("amount") or 0),
        "currency": str(pi.get("currency") or ""),
        "status": str(pi.get("status") or ""),
    }
    status = common["status"]
    secret = str(pi.get("client_secret") or "")
    if status == "succeeded":
        return Succeeded(**common, amount_received=int(pi.get("amount_received") or 0))
    if status == "requires_action":
        action = pi.get("next_action") or {}
        redirect = action.get("redirect_to_url") or {}
        return RequiresAction(
            **common,
            client_secret=secret,
            next_action_type=action.get("type"),
            redirect_url=redirect.get("url"),
        )
    if status == "processing":
        return Processing(**common)
    if status == "requires_capture":
        return RequiresCapture(**common, amount_capturable=int(pi.get("amount_capturable") or 0))
    if status == "canceled":
        return Canceled(**common, cancellation_reason=pi.get("cancellation_reason"))
    if status == "requires_confirmation":
        return RequiresConfirmation(**common, client_secret=secret)
    error = pi.get("last_payment_error") or {}
    if error.get("type") == "card_error":
        return _declined(common, error.get("decline_code"), error.get("code"), secret)
    return RequiresPaymentMethod(**common, client_secret=secret, last_error_code=error.get("code"))


def _declined(
    common: Mapping[str, Any], decline_code: str | None, code: str | None, secret: str | None
) -> Declined:
    advice = advise(decline_code, code=code)
    return Declined(
        **{**common, "status": "requires_payment_method"},
        decline_code=advice.decline_code or decline_code or "",
        code=code,
        user_message=advice.message,
        next_action=advice.next_action,
        generic=advice.generic,
        client_secret=secret or None,
    )


def _order_of(payment_intent: Mapping[str, Any]) -> str:
    metadata = payment_intent.get("metadata") or {}
    return str(metadata.get(ORDER_KEY) or payment_intent["id"])


def _is_payment_intent_id(value: str) -> bool:
    return value.startswith("pi_")


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching keys starting with ``prefix`` (wildcards escaped)."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


# -- the flow -------------------------------------------------------------------


class Payments:
    """Payments for orders (``app.payments``); see the module.

    ``Payments(app)`` is cheap: it holds no state but the ``fulfil`` hooks.
    """

    def __init__(self, app: Stripeline) -> None:
        self._app = app
        self._hooks: list[FulfilHook] = []

    # -- start and confirm --------------------------------------------------

    def start(
        self,
        order_id: str,
        amount: int,
        currency: str,
        *,
        customer: str | None = None,
        capture: Capture = "automatic",
        payment_method: str | None = None,
        metadata: Mapping[str, str] | None = None,
        payment_method_types: Sequence[str] | None = None,
        return_url: str | None = None,
        off_session: bool = False,
        account: str | None = None,
    ) -> PaymentOutcome:
        """Create the order's PaymentIntent (once, whatever is retried) and,
        given ``payment_method``, confirm it; return its typed outcome.

        Called again for the same order (a retry, a restarted process) it
        makes no second PaymentIntent and no second charge: it answers with
        the PaymentIntent's current outcome.

        ``account``: a connected account's id (``acct_…``): the PaymentIntent
        is made in that account (a direct charge), once per account and order.

        Raises:
            ValueError: ``amount`` is not positive, ``capture`` is unknown or
                ``account`` is not an ``acct_…`` id.
            CallConflict: this order was started with another amount,
                currency, customer, capture or metadata (nothing was sent).
            ModeMismatch: ``customer`` or ``payment_method`` is of the other mode.
            StripeAPIError: Stripe could not be reached or refused the call
                (a decline is not an error: it is ``Declined``).
        """
        if amount <= 0:
            raise ValueError("amount must be positive (in the currency's smallest unit)")
        if capture not in ("automatic", "manual"):
            raise ValueError('capture is "automatic" or "manual"')
        if not order_id or _is_payment_intent_id(order_id):
            raise ValueError("order_id is your order's id (not empty, not a PaymentIntent id)")
        check_account(account)
        self._app.calls.check_mode(customer, payment_method, account=account)
        params: dict[str, Any] = {
            "amount": int(amount),
            "currency": currency.lower(),
            "capture_method": capture,
            "metadata": {**(metadata or {}), ORDER_KEY: order_id},
        }
        if customer:
            params["customer"] = customer
        if payment_method_types:
            params["payment_method_types"] = list(payment_method_types)

        def send(client: StripeClient, key: str) -> Any:
            return client.v1.payment_intents.create(
                cast(Any, params), request_options(account, key)
            )

        def find(client: StripeClient) -> Any:
            query: dict[str, Any] = {"limit": 100}
            if customer:
                query["customer"] = customer
            listed = client.v1.payment_intents.list(cast(Any, query), request_options(account))
            for found in listed.auto_paging_iter():
                if (as_dict(found).get("metadata") or {}).get(ORDER_KEY) == order_id:
                    return found
            return None

        created = self._app.calls.run(CREATE, order_id, params, send, find=find, account=account)
        current = self._current(created, order_id, account)
        if payment_method is None or current.status in _SETTLED:
            return current  # paid, on its way, authorised or canceled: nothing to confirm
        return self._confirm(
            created,
            order_id,
            payment_method=payment_method,
            return_url=return_url,
            off_session=off_session,
            account=account,
        )

    def confirm(
        self,
        order_or_payment_intent: str,
        *,
        payment_method: str | None = None,
        return_url: str | None = None,
        off_session: bool = False,
        account: str | None = None,
    ) -> PaymentOutcome:
        """Confirm the order's PaymentIntent (with ``payment_method``, or the
        one attached); return its outcome.

        Raises:
            PaymentNotFound: no PaymentIntent is known for this order (in
                ``account``, or on the platform without it).
            ModeMismatch: an id given is of the other mode.
            StripeAPIError: Stripe could not be reached or refused the call
                (``StripeInvalidRequestError`` when the PaymentIntent cannot be
                confirmed in its state).
        """
        check_account(account)
        self._app.calls.check_mode(payment_method, account=account)
        payment_intent, order_id = self._resolve(order_or_payment_intent, account)
        return self._confirm(
            payment_intent,
            order_id,
            payment_method=payment_method,
            return_url=return_url,
            off_session=off_session,
            account=account,
        )

    def _confirm(
        self,
        payment_intent: Mapping[str, Any],
        order_id: str,
        *,
        payment_method: str | None,
        return_url: str | None,
        off_session: bool,
        account: str | None,
    ) -> PaymentOutcome:
        pi_id = str(payment_intent["id"])
        params: dict[str, Any] = {}
        if payment_method:
            params["payment_method"] = payment_method
        if return_url:
            params["return_url"] = return_url
        if off_session:
            params["off_session"] = True
        reference = self._confirm_reference(order_id, payment_method, pi_id, account)

        def send(client: StripeClient, key: str) -> Any:
            return client.v1.payment_intents.confirm(
                pi_id, cast(Any, params), request_options(account, key)
            )

        try:
            answer = self._app.calls.run(CONFIRM, reference, params, send, account=account)
        except StripeCardError as exc:
            common = {
                "payment_intent_id": pi_id,
                "order_id": order_id,
                "amount": int(payment_intent.get("amount") or 0),
                "currency": str(payment_intent.get("currency") or ""),
                "status": "requires_payment_method",
            }
            return _declined(
                common, exc.decline_code, exc.code, payment_intent.get("client_secret")
            )
        return self._current(answer, order_id, account)

    def _confirm_reference(
        self, order_id: str, payment_method: str | None, pi_id: str, account: str | None
    ) -> str:
        """The confirmation's reference: the attempt in flight or last made for
        this order and payment method, or a new attempt when that one finished
        and the PaymentIntent awaits a payment method again."""
        base = f"{order_id}:{payment_method or 'attached'}"
        attempt = 1
        while True:
            reference = base if attempt == 1 else f"{base}#{attempt}"
            record = self._app.calls.record(CONFIRM, reference, account=account)
            if record is None or record.status == "pending":
                return reference
            following = f"{base}#{attempt + 1}"
            if self._app.calls.record(CONFIRM, following, account=account) is not None:
                attempt += 1
                continue
            fresh = self._retrieve(pi_id, account)
            return following if fresh.get("status") in _AWAITING else reference

    # -- capture, cancel ------------------------------------------------------

    def capture(
        self,
        order_or_payment_intent: str,
        amount: int | None = None,
        *,
        account: str | None = None,
    ) -> PaymentOutcome:
        """Capture an authorised payment (``capture="manual"``): all of it, or
        ``amount`` (the rest is released). One capture per order.

        Raises:
            ValueError: ``amount`` is not positive, or ``account`` is not an
                ``acct_…`` id.
            PaymentNotFound: no PaymentIntent is known for this order (of
                ``account``, or of the platform without it).
            CallConflict: captured before with another amount (nothing was sent).
            StripeAPIError: Stripe refused (``StripeInvalidRequestError``: not
                ``requires_capture``, or more than authorised).
        """
        if amount is not None and amount <= 0:
            raise ValueError("amount must be positive")
        check_account(account)
        payment_intent, order_id = self._resolve(order_or_payment_intent, account)
        pi_id = str(payment_intent["id"])
        params: dict[str, Any] = {} if amount is None else {"amount_to_capture": int(amount)}

        def send(client: StripeClient, key: str) -> Any:
            return client.v1.payment_intents.capture(
                pi_id, cast(Any, params), request_options(account, key)
            )

        answer = self._app.calls.run(CAPTURE, order_id, params, send, account=account)
        return self._current(answer, order_id, account)

    def cancel(
        self,
        order_or_payment_intent: str,
        *,
        reason: str | None = None,
        account: str | None = None,
    ) -> PaymentOutcome:
        """Cancel the order's PaymentIntent (an authorisation is released);
        ``reason``: ``duplicate``, ``fraudulent``, ``requested_by_customer``,
        ``abandoned``.

        Raises:
            ValueError: ``account`` is not an ``acct_…`` id.
            PaymentNotFound: no PaymentIntent is known for this order (of
                ``account``, or of the platform without it).
            StripeAPIError: Stripe refused (``StripeInvalidRequestError``: it
                succeeded already; refund it instead).
        """
        check_account(account)
        payment_intent, order_id = self._resolve(order_or_payment_intent, account)
        pi_id = str(payment_intent["id"])
        params: dict[str, Any] = {} if reason is None else {"cancellation_reason": reason}

        def send(client: StripeClient, key: str) -> Any:
            return client.v1.payment_intents.cancel(
                pi_id, cast(Any, params), request_options(account, key)
            )

        answer = self._app.calls.run(CANCEL, order_id, params, send, account=account)
        return self._current(answer, order_id, account)

    # -- refunds ----------------------------------------------------------------

    def refund(
        self,
        order_or_payment_intent: str,
        amount: int | None = None,
        *,
        reason: str | None = None,
        reference: str | None = None,
        account: str | None = None,
    ) -> Refunded:
        """Refund ``amount`` (default: all that is left) of the order's payment.

        ``reference`` names this refund (a return's id, say): the same
        reference again is the same refund, never a second one; without it
        each call is a new refund (a full refund's reference is ``full``).
        The refunds recorded for the order (made, or sent and not yet
        answered), the refunds made outside stripeline and this one never
        exceed what was received, even when refunds are asked at once from
        several processes: they are admitted one at a time per order. A
        refund Stripe reports failed or canceled (returned by the card
        network) counts no more; its reference still answers with it. With
        ``account``, the refunds of that account's order are counted (and
        made in that account).

        Raises:
            ValueError: ``amount`` is not positive, ``reference`` holds ``:``,
                or ``account`` is not an ``acct_…`` id.
            PaymentNotFound: no PaymentIntent is known for this order (of
                ``account``, or of the platform without it).
            NotRefundable: more than is left to refund (``refundable``), or the
                payment did not succeed; nothing was sent to Stripe.
            CallConflict: this reference was refunded with another amount.
            StripeAPIError: Stripe refused the refund or could not be reached.
        """
        if amount is not None and amount <= 0:
            raise ValueError("amount must be positive")
        if reference is not None and (not reference or ":" in reference):
            raise ValueError("a refund's reference is not empty and holds no ':'")
        check_account(account)
        reference = reference or ("full" if amount is None else uuid.uuid4().hex)
        payment_intent = self._resolve(order_or_payment_intent, account)[0]
        pi_id = str(payment_intent["id"])
        fresh = self._retrieve(pi_id, account)
        order_id = _order_of(fresh)
        currency = str(fresh.get("currency") or "")
        prefix = f"{REFUND}:{order_id}:"
        made = self._recorded_refunds(prefix, account)
        if reference in made:
            recorded = made[reference]
            if amount is not None and amount != recorded:
                raise CallConflict(
                    f"refund {reference} of {order_id} was made for {recorded}, not {amount}; "
                    "a new refund needs a new reference (nothing was sent to Stripe)",
                    key=f"{prefix}{reference}",
                )
            amount = recorded
        received = int(fresh.get("amount_received") or 0)
        if fresh.get("status") != "succeeded" or received <= 0:
            raise NotRefundable(
                f"{order_id} has not been paid ({fresh.get('status')}): nothing to refund; "
                "cancel it instead (nothing was sent to Stripe)",
                refundable=0,
            )
        outside, returned = self._refunds_at_stripe(pi_id, account)
        if amount is None:
            amount = received - outside - _counted(made, prefix, returned)
            if amount <= 0:
                raise NotRefundable(
                    f"{order_id} is refunded in full already (nothing was sent to Stripe)",
                    refundable=0,
                )
        asked = amount

        def admit(conn: Connection) -> None:
            taken = self._recorded_refunds(prefix, account, conn)
            if reference in taken:
                raise CallConflict(
                    f"refund {reference} of {order_id} was made for {taken[reference]}, "
                    f"not {asked} (nothing was sent to Stripe)",
                    key=f"{prefix}{reference}",
                )
            refundable = received - outside - _counted(taken, prefix, returned)
            if asked > refundable:
                raise NotRefundable(
                    f"{order_id}: {asked} asked, {max(refundable, 0)} left to refund of "
                    f"{received} received (nothing was sent to Stripe)",
                    refundable=max(refundable, 0),
                    requested=asked,
                )

        key = f"{prefix}{reference}:{asked}"
        params: dict[str, Any] = {
            "payment_intent": pi_id,
            "amount": asked,
            "metadata": {REFUND_KEY: key, ORDER_KEY: order_id},
        }
        if reason is not None:
            params["reason"] = reason

        def send(client: StripeClient, idem: str) -> Any:
            return client.v1.refunds.create(cast(Any, params), request_options(account, idem))

        def find(client: StripeClient) -> Any:
            listed = client.v1.refunds.list(
                {"payment_intent": pi_id, "limit": 100}, request_options(account)
            )
            for found in listed.auto_paging_iter():
                if (as_dict(found).get("metadata") or {}).get(REFUND_KEY) == key:
                    return found
            return None

        answer = self._app.calls.run(
            REFUND,
            f"{order_id}:{reference}:{asked}",
            params,
            send,
            find=find,
            admit=admit,
            lock=f"refund:{order_id}",
            account=account,
        )
        return Refunded(
            refund_id=str(answer["id"]),
            payment_intent_id=pi_id,
            order_id=order_id,
            amount=int(answer.get("amount") or asked),
            currency=str(answer.get("currency") or currency),
            status=str(answer.get("status") or ""),
            reason=answer.get("reason"),
            reference=reference,
        )

    def _recorded_refunds(
        self, prefix: str, account: str | None, conn: Connection | None = None
    ) -> dict[str, int]:
        """The refunds of an order (of ``account``) in the ledger, not refused:
        reference → amount."""
        query = select(calls.c.key).where(
            calls.c.account == (account or ""),
            calls.c.key.like(_like_prefix(prefix), escape="\\"),
            calls.c.status != "failed",
        )
        if conn is not None:
            keys = list(conn.execute(query).scalars())
        else:
            from stripeline.db.engine import read

            keys = read(self._app.engine, lambda c: list(c.execute(query).scalars()))
        found: dict[str, int] = {}
        for key in keys:
            rest = key[len(prefix) :]
            if rest.count(":") != 1:
                continue  # another order whose id starts with this one's
            reference, amount = rest.split(":")
            if amount.isdigit():
                found[reference] = int(amount)
        return found

    def _refunds_at_stripe(self, pi_id: str, account: str | None) -> tuple[int, set[str]]:
        """What Stripe holds of the PaymentIntent's refunds, in one listing.

        The amount refunded elsewhere (the Dashboard), failed and canceled
        refunds left out; and the ledger keys of stripeline's own refunds
        that failed or were canceled after Stripe accepted them (the money
        came back: ``pm_card_refundFail``), which no longer count against
        what is left to refund.
        """
        from stripeline.gateway.client import stripe_errors

        total = 0
        returned: set[str] = set()
        with stripe_errors():
            listed = self._app.calls.client.v1.refunds.list(
                {"payment_intent": pi_id, "limit": 100}, request_options(account)
            )
            for found in listed.auto_paging_iter():
                refund = as_dict(found)
                ours = (refund.get("metadata") or {}).get(REFUND_KEY)
                gone = refund.get("status") in ("failed", "canceled")
                if ours:
                    if gone:
                        returned.add(str(ours))
                elif not gone:
                    total += int(refund.get("amount") or 0)
        return total, returned

    # -- reading ----------------------------------------------------------------

    def status(self, order_or_payment_intent: str, *, account: str | None = None) -> PaymentOutcome:
        """The order's outcome as the mirror holds it (no call to Stripe).

        Raises:
            PaymentNotFound: the mirror holds no PaymentIntent for this order
                (of ``account``, or of the platform without it).
        """
        check_account(account)
        pi_id, order_id = self._known(order_or_payment_intent, account)
        held = self._held(pi_id, account) if pi_id else None
        if held is None:
            raise PaymentNotFound(f"no payment known for {order_or_payment_intent}")
        return outcome_of(held, order_id)

    def _known(
        self, order_or_payment_intent: str, account: str | None
    ) -> tuple[str | None, str | None]:
        """The PaymentIntent id the ledger (or the caller) names, and the order."""
        if _is_payment_intent_id(order_or_payment_intent):
            self._app.calls.check_mode(order_or_payment_intent, account=account)
            return order_or_payment_intent, None
        record = self._app.calls.record(CREATE, order_or_payment_intent, account=account)
        if record is None or record.object_id is None:
            return None, order_or_payment_intent
        return record.object_id, order_or_payment_intent

    def _resolve(
        self, order_or_payment_intent: str, account: str | None
    ) -> tuple[dict[str, Any], str]:
        """The PaymentIntent (mirror first, else Stripe) and its order id, in
        ``account`` (a PaymentIntent of another account is not found)."""
        pi_id, order_id = self._known(order_or_payment_intent, account)
        if pi_id is None:
            raise PaymentNotFound(
                f"no payment was started for order {order_or_payment_intent} "
                "(start it, or pass the PaymentIntent's id)"
            )
        held = self._held(pi_id, account)
        payment_intent = held if held is not None else self._retrieve(pi_id, account)
        return payment_intent, order_id or _order_of(payment_intent)

    def _held(self, pi_id: str, account: str | None) -> dict[str, Any] | None:
        """The PaymentIntent as the mirror holds it under ``account``, or None."""
        return self._app.mirror.for_account(account).get(pi_id, "payment_intent")

    def _retrieve(self, pi_id: str, account: str | None) -> dict[str, Any]:
        from stripeline.errors import StripeInvalidRequestError
        from stripeline.gateway.client import stripe_errors

        try:
            with stripe_errors():
                return as_dict(
                    self._app.calls.client.v1.payment_intents.retrieve(
                        pi_id, None, request_options(account)
                    )
                )
        except StripeInvalidRequestError as exc:
            if exc.http_status == 404:
                where = f"in account {account}" if account else "on the platform account"
                raise PaymentNotFound(f"Stripe knows no PaymentIntent {pi_id} {where}") from exc
            raise

    def _current(
        self, answer: Mapping[str, Any], order_id: str, account: str | None
    ) -> PaymentOutcome:
        """The outcome of the newest state there is.

        The mirror's, when it agrees with the ledger's answer. When they differ
        (a webhook moved the PaymentIntent on since the answer; or the answer
        is an idempotent replay of an older state, written over a newer one by
        a concurrent call), the PaymentIntent is read from Stripe and the
        mirror set right.
        """
        pi_id = str(answer["id"])
        held = self._held(pi_id, account)
        if held is not None and held.get("status") == answer.get("status"):
            return outcome_of(held, order_id)
        fresh = self._retrieve(pi_id, account)
        with connect(self._app.engine) as conn:
            write_to_mirror(
                conn,
                fresh,
                account=account or "",
                livemode=self._app.calls.livemode,
                now=utcnow(),
            )
        return outcome_of(fresh, order_id)

    # -- fulfilment ---------------------------------------------------------------

    def fulfil(self, hook: FulfilHook) -> FulfilHook:
        """Register ``hook`` (a decorator): it runs once per order, when the
        order's payment is processed from the inbox (``payment_intent.succeeded``
        of a PaymentIntent started here, ``checkout.session.completed`` with
        ``payment_status`` ``paid``, ``checkout.session.async_payment_succeeded``),
        in the event's transaction: whatever the duplicates, order or replays,
        and never from a browser's redirect.

        The order of a Checkout Session is its ``metadata["stripeline_order_id"]``,
        else its ``client_reference_id``, else its id. A hook that raises
        rolls the event back (retried later, the once-mark with it).

        A connected account's payment (its events come through the Connect
        endpoint) is fulfilled once per account and order, with
        ``Fulfilment.account`` naming the account.
        """
        if not self._hooks:
            self._app.on(*FULFILLING_EVENTS)(self._on_paid)
        self._hooks.append(hook)
        return hook

    def _on_paid(self, event: ReceivedEvent) -> Awaitable[None] | None:
        fulfilment = fulfilment_of(event)
        if fulfilment is None or not event.once(_fulfil_key(fulfilment)):
            return None
        pending = [r for r in (hook(fulfilment) for hook in self._hooks) if r is not None]
        if not pending:
            return None

        async def finish() -> None:
            for result in pending:
                await result

        return finish()

    # -- async twins ----------------------------------------------------------------

    start_async = in_thread(start)

    confirm_async = in_thread(confirm)

    capture_async = in_thread(capture)

    cancel_async = in_thread(cancel)

    refund_async = in_thread(refund)

    status_async = in_thread(status)


def fulfilment_of(event: ReceivedEvent) -> Fulfilment | None:
    """The order an event pays, or None (not a payment, not paid, a
    PaymentIntent not started by ``Payments``, or a Checkout Session not in
    ``payment`` mode: a subscription is not an order, its access follows its
    own state, see ``app.entitlements``)."""
    obj = event.object
    if event.type == "payment_intent.succeeded":
        order_id = (obj.get("metadata") or {}).get(ORDER_KEY)
        if not order_id:
            return None
        return Fulfilment(
            order_id=str(order_id),
            payment_intent_id=str(obj["id"]),
            amount=int(obj.get("amount_received") or obj.get("amount") or 0),
            currency=str(obj.get("currency") or ""),
            customer=obj.get("customer"),
            event=event,
            account=event.account or None,
        )
    if event.type not in FULFILLING_EVENTS or obj.get("object") != "checkout.session":
        return None
    if obj.get("mode") != "payment":
        return None  # subscription and setup sessions: no order was paid
    if event.type == "checkout.session.completed" and obj.get("payment_status") != "paid":
        return None  # an asynchronous payment: async_payment_succeeded fulfils it
    order_id = (
        (obj.get("metadata") or {}).get(ORDER_KEY) or obj.get("client_reference_id") or obj["id"]
    )
    payment_intent = obj.get("payment_intent")
    if isinstance(payment_intent, dict):
        payment_intent = payment_intent.get("id")
    return Fulfilment(
        order_id=str(order_id),
        payment_intent_id=payment_intent,
        amount=int(obj.get("amount_total") or 0),
        currency=str(obj.get("currency") or ""),
        customer=obj.get("customer") if isinstance(obj.get("customer"), str) else None,
        event=event,
        account=event.account or None,
    )


def _fulfil_key(fulfilment: Fulfilment) -> str:
    """The once-mark of an order's fulfilment: ``fulfil:<order>`` on the
    platform, ``fulfil@<account>:<order>`` for a connected account's order
    (the same order id in two accounts is two orders; no platform order's
    mark starts with ``fulfil@``)."""
    if fulfilment.account:
        return f"fulfil@{fulfilment.account}:{fulfilment.order_id}"
    return f"fulfil:{fulfilment.order_id}"


def _counted(recorded: dict[str, int], prefix: str, returned: set[str]) -> int:
    """The ledger's refunds of an order that still hold money back.

    ``recorded`` maps reference → amount; a refund whose ledger key Stripe
    reports failed or canceled (``returned``) is left out.
    """
    return sum(
        amount
        for reference, amount in recorded.items()
        if f"{prefix}{reference}:{amount}" not in returned
    )
