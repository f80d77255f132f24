"""Checkout and the customer portal (``app.checkout``): Stripe's hosted pages
for a payment or a subscription, made once per order, and the billing
portal's link.

::

    started = app.checkout.start_payment(
        "order_42", 2000, "usd", user_id="user_7",
        success_url="https://shop.example/thanks", cancel_url="https://shop.example/cart",
    )
    redirect(started.url)                    # Stripe's hosted payment page

    @app.fulfil
    def ship(order: Fulfilment) -> None:     # once, from the webhook
        ...

    redirect(app.checkout.portal("user_7", return_url="https://shop.example/account"))

Every session is made through the ledger of outgoing calls (``app.calls``):

* ``checkout_session:create`` for the order (``start_payment``) or for the
  user and the prices (``start_subscription``): a double click, a retry or a
  restarted process get the same session, never a second one; the same order
  with another amount is a ``CallConflict``. A session that expired (Stripe
  keeps one open for 24 hours) is replaced by a new one, once
  (``<reference>:after:<expired session>``).
* ``billing_portal_session:create``: a new portal session on every call
  (they are short-lived links), recorded like every write.

The order rides on the session and its PaymentIntent:
``client_reference_id`` and ``metadata["stripeline_order_id"]``, on the
session and on ``payment_intent_data.metadata``, so ``@app.fulfil`` runs once
per order when ``checkout.session.completed`` (paid) or
``checkout.session.async_payment_succeeded`` (a bank debit) or the
PaymentIntent's ``payment_intent.succeeded`` is processed from the inbox,
whichever comes first, whatever the duplicates: never from the redirect to
``success_url``.

Connect (direct charges): ``start_payment``, ``start_subscription`` and
``portal`` take ``account=`` (a connected account's id, ``acct_…``). The
session is then made in that account (``Stripe-Account``) for that account's
customer of the user (``app.customers.ensure(..., account=...)``), its calls
are recorded and its answers mirrored under the account: the same order on
the platform and on a connected account (or on two accounts) are two
sessions, each made once, never a ``CallConflict`` between them. Its paid
session fulfils the order once per account, with ``Fulfilment.account`` set
(its events come through the Connect endpoint).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast

from stripeline.errors import StripeInvalidRequestError
from stripeline.flows._twin import in_thread
from stripeline.flows.calls import as_dict, check_account, request_options
from stripeline.flows.payments import ORDER_KEY

if TYPE_CHECKING:
    from stripeline.app import Stripeline
    from stripeline.gateway import StripeClient

__all__ = ["CHECKOUT_KEY", "Checkout", "CheckoutMode", "StartedCheckout"]

#: The metadata key naming the ledger's reference of a session made here.
CHECKOUT_KEY = "stripeline_checkout"
_USER_KEY = "stripeline_user_id"

CREATE = "checkout_session:create"
PORTAL = "billing_portal_session:create"

CheckoutMode = Literal["payment", "subscription"]

#: How many expired sessions of one order are followed before giving up.
_MAX_RENEWALS = 50


@dataclass(frozen=True)
class StartedCheckout:
    """A Checkout Session made (or found again) by ``Checkout``: send the
    customer to ``url``."""

    session_id: str
    #: The hosted page (None once the session is complete or expired).
    url: str | None
    mode: CheckoutMode
    #: ``open``, ``complete`` or ``expired``.
    status: str
    #: The order (``start_payment``) or the subscription checkout's reference.
    order_id: str
    customer: str | None
    expires_at: datetime | None

    @property
    def complete(self) -> bool:
        """Paid (or subscribed): the order is done; fulfilment comes from the webhook."""
        return self.status == "complete"


def _started(session: Mapping[str, Any], order_id: str) -> StartedCheckout:
    expires = session.get("expires_at")
    customer = session.get("customer")
    return StartedCheckout(
        session_id=str(session["id"]),
        url=session.get("url"),
        mode=cast(CheckoutMode, session.get("mode") or "payment"),
        status=str(session.get("status") or ""),
        order_id=order_id,
        customer=customer if isinstance(customer, str) else None,
        expires_at=datetime.fromtimestamp(int(expires), UTC) if expires else None,
    )


def _check_urls(success_url: str, cancel_url: str | None) -> None:
    for name, url in (("success_url", success_url), ("cancel_url", cancel_url)):
        if url is not None and not url.startswith(("https://", "http://")):
            raise ValueError(f"{name} must be an absolute http(s) URL")


class Checkout:
    """Checkout Sessions and billing-portal links (``app.checkout``); see the module."""

    def __init__(self, app: Stripeline) -> None:
        self._app = app

    # -- payments -------------------------------------------------------------------

    def start_payment(
        self,
        order_id: str,
        amount: int | None = None,
        currency: str | None = None,
        *,
        line_items: Sequence[Mapping[str, Any]] | None = None,
        user_id: str | None = None,
        email: str | None = None,
        success_url: str,
        cancel_url: str | None = None,
        description: str | None = None,
        capture: Literal["automatic", "manual"] = "automatic",
        payment_method_types: Sequence[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        account: str | None = None,
    ) -> StartedCheckout:
        """A Checkout Session paying order ``order_id``: ``amount`` in
        ``currency`` (one line named ``description``), or Stripe's
        ``line_items`` (``[{"price": "price_…", "quantity": 2}]``). With
        ``user_id``, the session is that user's one customer's
        (``app.customers.ensure``). The same order again answers the same
        session (a complete one too: the order is paid); an expired one is
        replaced.

        ``account``: a connected account's id (``acct_…``): the session is
        made in that account (a direct charge), once per account and order,
        for that account's customer of ``user_id``; ``line_items`` name that
        account's prices.

        Raises:
            ValueError: neither or both of ``amount`` and ``line_items``, a
                non-positive amount, a relative URL, an empty order id, an
                ``account`` that is not an ``acct_…`` id.
            CallConflict: this order's session was made with another amount,
                items, customer or URLs, and is still open (nothing was sent).
            StripeAPIError: Stripe could not be reached or refused the call.
        """
        if not order_id:
            raise ValueError("order_id is your order's id (not empty)")
        check_account(account)
        if (amount is None) == (line_items is None):
            raise ValueError("give amount and currency, or line_items (not both)")
        _check_urls(success_url, cancel_url)
        items: list[dict[str, Any]]
        if amount is not None:
            if amount <= 0 or not currency:
                raise ValueError("amount must be positive, with a currency")
            items = [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": currency.lower(),
                        "unit_amount": int(amount),
                        "product_data": {"name": description or f"Order {order_id}"},
                    },
                }
            ]
        else:
            items = [dict(item) for item in line_items or ()]
            if not items:
                raise ValueError("line_items is empty")
        order_metadata = {**(metadata or {}), ORDER_KEY: order_id}
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": items,
            "success_url": success_url,
            "client_reference_id": order_id,
            "metadata": order_metadata,
            "payment_intent_data": {
                "metadata": order_metadata,
                "capture_method": capture,
            },
        }
        if cancel_url is not None:
            params["cancel_url"] = cancel_url
        if payment_method_types:
            params["payment_method_types"] = list(payment_method_types)
        self._with_customer(params, user_id, email, account)
        return self._start(order_id, params, order_id, account, reuse_complete=True)

    # -- subscriptions ---------------------------------------------------------------

    def start_subscription(
        self,
        user_id: str,
        prices: Sequence[str] | Mapping[str, int],
        *,
        trial_days: int | None = None,
        email: str | None = None,
        success_url: str,
        cancel_url: str | None = None,
        metadata: Mapping[str, str] | None = None,
        account: str | None = None,
    ) -> StartedCheckout:
        """A Checkout Session subscribing user ``user_id`` (their one customer,
        ``app.customers.ensure``) to ``prices`` (ids, or id → quantity), with a
        trial of ``trial_days``. The same user and prices again answer the
        same open session; once it is complete or expired, a new one.

        Its ``order_id`` (``metadata["stripeline_order_id"]``) is
        ``subscription:<user>:<prices' digest>`` (``…:after:<session>`` for a
        later one). ``@app.fulfil`` never sees it: a subscription is not an
        order; read access from ``app.entitlements`` (docs/checkout.md).

        ``account``: a connected account's id (``acct_…``): the session is
        made in that account for that account's customer of the user, and
        ``prices`` are that account's prices (a direct charge).

        Raises:
            ValueError: no prices, a quantity under 1, a negative trial, a
                relative URL, an ``account`` that is not an ``acct_…`` id.
            CallConflict: the open session for these prices was made with
                other URLs, trial or metadata (nothing was sent).
            StripeAPIError: Stripe could not be reached or refused the call.
        """
        check_account(account)
        quantities = dict(prices) if isinstance(prices, Mapping) else dict.fromkeys(prices, 1)
        if not quantities or any(q < 1 for q in quantities.values()):
            raise ValueError("give at least one price, each with a quantity of 1 or more")
        if trial_days is not None and trial_days < 0:
            raise ValueError("trial_days may not be negative")
        _check_urls(success_url, cancel_url)
        digest = hashlib.sha256(
            json.dumps(sorted(quantities.items()), separators=(",", ":")).encode()
        ).hexdigest()[:16]
        reference = f"subscription:{user_id}:{digest}"
        params: dict[str, Any] = {
            "mode": "subscription",
            "line_items": [{"price": p, "quantity": q} for p, q in sorted(quantities.items())],
            "success_url": success_url,
            "client_reference_id": user_id,
            "metadata": {**(metadata or {}), _USER_KEY: user_id},
            "subscription_data": {"metadata": {**(metadata or {}), _USER_KEY: user_id}},
        }
        if trial_days:
            params["subscription_data"]["trial_period_days"] = trial_days
        if cancel_url is not None:
            params["cancel_url"] = cancel_url
        self._with_customer(params, user_id, email, account)
        return self._start(reference, params, reference, account, reuse_complete=False)

    # -- the portal --------------------------------------------------------------------

    def portal(
        self,
        user_id: str,
        return_url: str,
        *,
        email: str | None = None,
        account: str | None = None,
    ) -> str:
        """A link to Stripe's billing portal for user ``user_id``'s customer
        (cards, invoices, subscriptions), coming back to ``return_url``. A
        new, short-lived link on every call: redirect to it at once.

        ``account``: a connected account's id (``acct_…``): the portal of
        that account's customer of the user, made in that account.

        Raises:
            ValueError: a bad user id, a relative URL, an ``account`` that is
                not an ``acct_…`` id.
            StripeAPIError: Stripe could not be reached or refused the call
                (no portal configuration in live mode, …).
        """
        check_account(account)
        _check_urls(return_url, None)
        customer = self._app.customers.ensure(user_id, email=email, account=account).id
        params = {"customer": customer, "return_url": return_url}

        def send(client: StripeClient, key: str) -> Any:
            return client.v1.billing_portal.sessions.create(
                cast(Any, params), request_options(account, key)
            )

        answer = self._app.calls.run(
            PORTAL, f"{user_id}:{uuid.uuid4().hex}", params, send, account=account
        )
        return str(answer["url"])

    # -- the ledger ------------------------------------------------------------------------

    def _with_customer(
        self, params: dict[str, Any], user_id: str | None, email: str | None, account: str | None
    ) -> None:
        if user_id is not None:
            params["customer"] = self._app.customers.ensure(
                user_id, email=email, account=account
            ).id
        elif email is not None:
            params["customer_email"] = email

    def _start(
        self,
        reference: str,
        params: dict[str, Any],
        order_id: str,
        account: str | None,
        *,
        reuse_complete: bool,
    ) -> StartedCheckout:
        """The session of ``reference`` in ``account``: the recorded one while
        it is open (or complete, when ``reuse_complete``), else the next one
        in its chain."""
        for _ in range(_MAX_RENEWALS):
            record = self._app.calls.record(CREATE, reference, account=account)
            if record is None or record.object_id is None:
                break
            session = self._retrieve(record.object_id, account)
            if session is None:
                break  # deleted at Stripe (or never made): the call decides
            status = session.get("status")
            if status == "open" or (status == "complete" and reuse_complete):
                # The same call again checks the parameters (CallConflict).
                self._run(reference, params, order_id, account)
                return _started(session, self._order_of(session, order_id))
            reference = f"{reference.split(':after:')[0]}:after:{session['id']}"
            if not reuse_complete:
                order_id = reference
        else:
            raise RuntimeError(f"more than {_MAX_RENEWALS} expired sessions for {order_id}")
        return _started(self._run(reference, params, order_id, account), order_id)

    def _run(
        self, reference: str, params: dict[str, Any], order_id: str, account: str | None
    ) -> dict[str, Any]:
        made = {**params, "metadata": {**params["metadata"], CHECKOUT_KEY: reference}}
        if params["mode"] == "subscription":
            made["metadata"][ORDER_KEY] = order_id

        def send(client: StripeClient, key: str) -> Any:
            return client.v1.checkout.sessions.create(
                cast(Any, made), request_options(account, key)
            )

        def find(client: StripeClient) -> Any:
            query: dict[str, Any] = {"limit": 100}
            if made.get("customer"):
                query["customer"] = made["customer"]
            listed = client.v1.checkout.sessions.list(cast(Any, query), request_options(account))
            for found in listed.auto_paging_iter():
                if (as_dict(found).get("metadata") or {}).get(CHECKOUT_KEY) == reference:
                    return found
            return None

        return self._app.calls.run(CREATE, reference, made, send, find=find, account=account)

    @staticmethod
    def _order_of(session: Mapping[str, Any], default: str) -> str:
        return str((session.get("metadata") or {}).get(ORDER_KEY) or default)

    def _retrieve(self, session_id: str, account: str | None) -> dict[str, Any] | None:
        """The session as Stripe holds it in ``account``, or None (404)."""
        from stripeline.gateway.client import stripe_errors

        try:
            with stripe_errors():
                found = self._app.calls.client.v1.checkout.sessions.retrieve(
                    session_id, None, request_options(account)
                )
        except StripeInvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise
        return as_dict(found)

    # -- async twins -------------------------------------------------------------------------

    start_payment_async = in_thread(start_payment)

    start_subscription_async = in_thread(start_subscription)

    portal_async = in_thread(portal)
