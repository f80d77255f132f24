"""FastAPI: stripeline mounted in your app, and its objects as dependencies.

::

    from typing import Annotated

    from fastapi import Depends, FastAPI

    import stripeline
    from stripeline.contrib.fastapi import mirror_dependency

    billing = stripeline.Stripeline()
    app = FastAPI(lifespan=billing.lifespan)      # starts stripeline's writer and worker
    app.mount("/stripe", billing.asgi())          # POST /stripe/webhooks/stripe, …

    MirrorDep = Annotated[stripeline.Mirror, Depends(mirror_dependency(billing))]


    @app.get("/access/{user}")
    def access(user: str, mirror: MirrorDep) -> dict[str, bool]:
        customer = mirror.customer_for_user(user)
        return {"access": bool(customer and mirror.active_subscriptions(customer.id))}

A dependency is a plain callable made once per application (``dependency``):
FastAPI calls it for each request and gets the same object, built on first
use from the ``Stripeline`` app. ``mirror_dependency`` is the first; each of
the application's services is offered the same way, ``dependency(billing,
lambda app: app.<service>)``. This module does not import FastAPI: it only
makes the callables that ``Depends`` takes. See docs/integrations/fastapi.md.

``payments_router`` is the HTTP side of ``app.payments`` for a browser or a
mobile app: an ``APIRouter`` (FastAPI is imported when it is called) that
starts, confirms and reads the payment of an order, answering the typed
outcome as JSON (``client_secret`` included), with its OpenAPI schema::

    from stripeline.contrib.fastapi import Payer, Price, payments_router

    def price(order_id: str, user: User) -> Price:        # from YOUR database
        order = orders.get(order_id)
        return Price(order.total, order.currency)

    def owns(order_id: str, user: User) -> bool:
        return orders.get(order_id).user_id == user.id

    app.include_router(payments_router(
        billing, user=current_user, price=price, owns=owns,
        customer_of=lambda user: Payer(user.id, email=user.email),
    ))

Who the user is comes from your dependency (``user``), never from
stripeline; which orders are theirs from ``owns``; what an order costs from
``price``. The request carries a payment method at most: an amount or a
currency sent by the client is refused (422), never used.
"""

from __future__ import annotations

# Modules only at the top: this module's public names are its own (``__all__``).
import asyncio
import collections.abc
import dataclasses
import inspect
import threading
import typing

import pydantic

from stripeline import declines, errors
from stripeline.flows import payments as _payments

if typing.TYPE_CHECKING:
    from collections.abc import Callable

    from fastapi import APIRouter, HTTPException

    from stripeline.app import Stripeline
    from stripeline.mirror import Mirror

__all__ = [
    "Payer",
    "PaymentCanceled",
    "PaymentDeclined",
    "PaymentOutcomeBody",
    "PaymentProcessing",
    "PaymentRequest",
    "PaymentRequiresAction",
    "PaymentRequiresCapture",
    "PaymentRequiresConfirmation",
    "PaymentRequiresPaymentMethod",
    "PaymentSucceeded",
    "Price",
    "dependency",
    "mirror_dependency",
    "outcome_body",
    "payments_router",
]

_T = typing.TypeVar("_T")


def dependency(app: Stripeline, build: Callable[[Stripeline], _T]) -> Callable[[], _T]:
    """A FastAPI dependency (``Depends(dependency(app, build))``) that gives
    every request ``build(app)``, built once, on the first request that
    needs it (so the settings are read after the app is configured, not at
    import)."""
    lock = threading.Lock()
    built: list[_T] = []

    def provide() -> _T:
        if not built:
            with lock:
                if not built:
                    built.append(build(app))
        return built[0]

    return provide


def mirror_dependency(app: Stripeline, *, account: str | None = None) -> Callable[[], Mirror]:
    """A FastAPI dependency giving routes ``app``'s ``Mirror`` (of ``account``,
    a connected account, when given): ``Depends(mirror_dependency(app))``.

    The mirror reads through the app's engine: one pool for the worker and
    the routes. Its methods are synchronous (use them in ``def`` routes,
    which FastAPI runs in a thread) with ``…_async`` twins for ``async def``
    routes.
    """

    def mirror(app: Stripeline) -> Mirror:
        from stripeline.mirror import Mirror

        return Mirror(app.engine, account=account)

    return dependency(app, mirror)


# -- the payments router --------------------------------------------------------------


class Price(typing.NamedTuple):
    """What an order costs, as your server knows it: ``amount`` in the
    currency's smallest unit (cents), ``currency`` (``"usd"``)."""

    amount: int
    currency: str


@dataclasses.dataclass(frozen=True)
class Payer:
    """Who pays, for ``customer_of``: your user's id (the one Stripe customer
    of that user is ``app.customers.ensure(user_id, email=…, name=…)``)."""

    user_id: str
    email: str | None = None
    name: str | None = None


class PaymentRequest(pydantic.BaseModel):
    """The body of ``POST …/{order_id}``: a payment method at most. The amount
    and currency are your server's (``price``): a body naming them is refused."""

    model_config = pydantic.ConfigDict(extra="forbid")

    #: A PaymentMethod made by Stripe.js (``pm_…``): the payment is confirmed
    #: with it. Without it, the PaymentIntent is made (or read) and its
    #: ``client_secret`` returned, for Stripe.js to confirm in the browser.
    payment_method: str | None = pydantic.Field(default=None, min_length=3, max_length=255)


class _Body(pydantic.BaseModel):
    order_id: str
    payment_intent_id: str
    amount: int = pydantic.Field(description="In the currency's smallest unit.")
    currency: str
    status: str = pydantic.Field(description="Stripe's status of the PaymentIntent.")


class PaymentSucceeded(_Body):
    """Paid. Fulfilment runs from the webhook (``@app.fulfil``), not from this answer."""

    kind: typing.Literal["succeeded"] = "succeeded"
    amount_received: int


class PaymentRequiresAction(_Body):
    """3-D Secure: ``stripe.handleNextAction({clientSecret})``, or go to ``redirect_url``."""

    kind: typing.Literal["requires_action"] = "requires_action"
    client_secret: str
    next_action_type: str | None = None
    redirect_url: str | None = None


class PaymentProcessing(_Body):
    """On its way (a bank debit): read the status later."""

    kind: typing.Literal["processing"] = "processing"


class PaymentRequiresCapture(_Body):
    """Authorised, to be captured by the server."""

    kind: typing.Literal["requires_capture"] = "requires_capture"
    amount_capturable: int


class PaymentDeclined(_Body):
    """_payments.Declined: show ``user_message`` (safe: it never tells a fraudster why),
    then try again with another payment method."""

    kind: typing.Literal["declined"] = "declined"
    user_message: str
    next_action: declines.NextAction
    client_secret: str | None = None


class PaymentRequiresPaymentMethod(_Body):
    """Waiting for a payment method: collect one with ``client_secret`` (Stripe.js)."""

    kind: typing.Literal["requires_payment_method"] = "requires_payment_method"
    client_secret: str
    last_error_code: str | None = None


class PaymentRequiresConfirmation(_Body):
    """A payment method attached, not confirmed yet."""

    kind: typing.Literal["requires_confirmation"] = "requires_confirmation"
    client_secret: str


class PaymentCanceled(_Body):
    """_payments.Canceled: nothing will be charged."""

    kind: typing.Literal["canceled"] = "canceled"
    cancellation_reason: str | None = None


#: The JSON of a ``PaymentOutcome``, one model per outcome, told apart by ``kind``.
PaymentOutcomeBody = typing.Annotated[
    PaymentSucceeded
    | PaymentRequiresAction
    | PaymentProcessing
    | PaymentRequiresCapture
    | PaymentDeclined
    | PaymentRequiresPaymentMethod
    | PaymentRequiresConfirmation
    | PaymentCanceled,
    pydantic.Field(discriminator="kind"),
]


def outcome_body(outcome: _payments.PaymentOutcome) -> PaymentOutcomeBody:
    """The JSON model of a payment outcome, safe to send to the customer's
    browser (a ``Declined`` leaves out its ``decline_code``: the customer
    reads ``user_message``; the code is for your logs)."""
    common: dict[str, typing.Any] = {
        "order_id": outcome.order_id,
        "payment_intent_id": outcome.payment_intent_id,
        "amount": outcome.amount,
        "currency": outcome.currency,
        "status": outcome.status,
    }
    match outcome:
        case _payments.Succeeded():
            return PaymentSucceeded(**common, amount_received=outcome.amount_received)
        case _payments.RequiresAction():
            return PaymentRequiresAction(
                **common,
                client_secret=outcome.client_secret,
                next_action_type=outcome.next_action_type,
                redirect_url=outcome.redirect_url,
            )
        case _payments.Processing():
            return PaymentProcessing(**common)
        case _payments.RequiresCapture():
            return PaymentRequiresCapture(**common, amount_capturable=outcome.amount_capturable)
        case _payments.Declined():
            return PaymentDeclined(
                **common,
                user_message=outcome.user_message,
                next_action=outcome.next_action,
                client_secret=outcome.client_secret,
            )
        case _payments.RequiresPaymentMethod():
            return PaymentRequiresPaymentMethod(
                **common,
                client_secret=outcome.client_secret,
                last_error_code=outcome.last_error_code,
            )
        case _payments.RequiresConfirmation():
            return PaymentRequiresConfirmation(**common, client_secret=outcome.client_secret)
        case _payments.Canceled():
            return PaymentCanceled(**common, cancellation_reason=outcome.cancellation_reason)
    raise TypeError(f"not a payment outcome: {type(outcome).__name__}")


_Priced = Price | tuple[int, str] | None
#: ``price(order_id, user)``: the order's price from your database (None: no such order).
_PriceOf = collections.abc.Callable[[str, typing.Any], _Priced | collections.abc.Awaitable[_Priced]]
#: ``owns(order_id, user)``: whether the order is this user's.
_Owns = collections.abc.Callable[[str, typing.Any], bool | collections.abc.Awaitable[bool]]
#: ``customer_of(user)``: who pays (a ``Payer``, or your user's id), or None.
_CustomerOf = collections.abc.Callable[
    [typing.Any], Payer | str | collections.abc.Awaitable[Payer | str | None] | None
]

_MAX_ORDER_ID = 200


async def _call(
    function: collections.abc.Callable[..., typing.Any], *args: typing.Any
) -> typing.Any:
    """A callback of the application: awaited when async, else run in a
    thread (it may read a database) so the event loop is never blocked."""
    if inspect.iscoroutinefunction(function):
        return await function(*args)
    result = await asyncio.to_thread(function, *args)
    if inspect.isawaitable(result):
        return await result
    return result


def _http_error(exc: Exception) -> HTTPException:
    """The answer to the browser for an error of the flow: a fixed message
    (never Stripe's text, never an amount or a card's details)."""
    from fastapi import HTTPException

    if isinstance(exc, errors.PaymentNotFound):
        return HTTPException(404, "No payment was started for this order.")
    if isinstance(exc, errors.CallConflict):
        return HTTPException(
            409,
            "This order's payment was started with another amount, currency or customer; "
            "a changed order needs a new order id.",
        )
    if isinstance(exc, errors.ModeMismatch | errors.CustomerNotFound):
        return HTTPException(400, "This payment method cannot be used here.")
    if isinstance(exc, errors.StripeCardError):
        from stripeline.declines import advise_error

        return HTTPException(402, advise_error(exc).message)
    if isinstance(exc, errors.StripeInvalidRequestError):
        return HTTPException(400, "The payment could not be made with this payment method.")
    if isinstance(exc, errors.StripeAPIError) and exc.retryable:
        return HTTPException(
            503, "The payment service is unavailable; try again.", {"Retry-After": "5"}
        )
    return HTTPException(502, "The payment service refused the request.")


def payments_router(
    app: Stripeline,
    *,
    user: typing.Any,
    price: _PriceOf,
    owns: _Owns,
    customer_of: _CustomerOf | None = None,
    return_url: str | collections.abc.Callable[[str, typing.Any], str] | None = None,
    prefix: str = "/payments",
    tags: list[str] | None = None,
) -> APIRouter:
    """An ``APIRouter`` for your FastAPI app (``include_router``): the
    payment of an order, for the customer's browser.

    * ``POST {prefix}/{order_id}`` (body ``{"payment_method": "pm_…"}``,
      optional): ``app.payments.start`` for the order, with the amount and
      currency ``price`` gives, confirmed with the payment method when one is
      given (again after a decline: the same PaymentIntent, another card).
    * ``GET {prefix}/{order_id}``: the payment's outcome, from the mirror.

    Both answer a ``PaymentOutcomeBody`` (``kind`` tells which outcome;
    ``client_secret`` for Stripe.js where there is one).

    Args:
        user: your FastAPI dependency giving the signed-in user (a callable,
            or ``Depends(...)``); it refuses anonymous requests itself (a
            401 of your own). A dependency answering None is refused (401).
        price: ``price(order_id, user)`` → ``Price(amount, currency)`` (or a
            tuple), from your database: the only source of the amount. None
            answers 404 (no such order).
        owns: ``owns(order_id, user)`` → whether the order is this user's;
            False answers 404, as an unknown order does (it may also raise
            your own ``HTTPException(403)``). Asked before anything else.
        customer_of: ``customer_of(user)`` → a ``Payer`` (or your user's id):
            the payment is made for that user's one Stripe customer
            (``app.customers.ensure``). Without it, or given None, it is made
            without a customer.
        return_url: where a redirecting payment method sends the customer
            back: a URL, or ``return_url(order_id, user)``. Never the client's.
        prefix: the routes' path prefix.
        tags: OpenAPI tags (default ``["payments"]``).

    Each of ``price``, ``owns`` and ``customer_of`` may be ``async``; a plain
    function runs in a worker thread. Every callback runs for every request:
    nothing the client sends is trusted, and an order whose price changed
    after its payment started answers 409 (a changed order is a new order id).

    Raises:
        ImportError: FastAPI is not installed (``pip install 'stripeline[fastapi]'``).
    """
    # Route annotations name module-level types only: FastAPI resolves them
    # in this module's globals (annotations are strings here).
    from fastapi import APIRouter, HTTPException, params

    who = user if isinstance(user, params.Depends) else params.Depends(user)
    router = APIRouter(prefix=prefix, tags=list(tags) if tags is not None else ["payments"])
    documented: dict[int | str, dict[str, typing.Any]] = {
        401: {"description": "Not signed in (your `user` dependency)."},
        404: {"description": "No such order for this user, or no payment for it yet."},
        409: {"description": "The order's payment was started with another price."},
        503: {"description": "Stripe could not be reached: try again (`Retry-After`)."},
    }

    async def authorised(order_id: str, signed_in: typing.Any) -> None:
        if signed_in is None:
            raise HTTPException(401, "Not signed in.")
        if (
            len(order_id) > _MAX_ORDER_ID
            or order_id.startswith("pi_")
            or not await _call(owns, order_id, signed_in)
        ):
            raise HTTPException(404, "No such order.")

    @router.post(
        "/{order_id}",
        response_model=PaymentOutcomeBody,
        responses=documented,
        summary="Start (and confirm) the payment of an order",
    )
    async def start_payment(
        order_id: str,
        request: PaymentRequest | None = None,
        signed_in: typing.Any = who,
    ) -> typing.Any:
        await authorised(order_id, signed_in)
        priced = await _call(price, order_id, signed_in)
        if priced is None:
            raise HTTPException(404, "No such order.")
        amount, currency = priced
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise ValueError(f"price() gave {amount!r} for an order: a positive int is needed")
        customer: str | None = None
        if customer_of is not None:
            payer = await _call(customer_of, signed_in)
            if isinstance(payer, str):
                payer = Payer(payer)
            if payer is not None:
                found = await app.customers.ensure_async(
                    payer.user_id, email=payer.email, name=payer.name
                )
                customer = found.id
        back = return_url(order_id, signed_in) if callable(return_url) else return_url
        method = request.payment_method if request is not None else None
        try:
            outcome = await app.payments.start_async(
                order_id,
                amount,
                str(currency),
                customer=customer,
                payment_method=method,
                return_url=back if method else None,
            )
        except errors.StripelineError as exc:
            raise _http_error(exc) from exc
        return outcome_body(outcome)

    @router.get(
        "/{order_id}",
        response_model=PaymentOutcomeBody,
        responses=documented,
        summary="The payment of an order, as it stands",
    )
    async def payment_status(order_id: str, signed_in: typing.Any = who) -> typing.Any:
        await authorised(order_id, signed_in)
        try:
            outcome = await app.payments.status_async(order_id)
        except errors.StripelineError as exc:
            raise _http_error(exc) from exc
        return outcome_body(outcome)

    return router
