"""Customers: the one Stripe customer of each application user, and its cards.

::

    customer = app.customers.ensure("user_7", email="ada@example.com", name="Ada")
    setup = app.customers.setup_card("user_7")        # client_secret for Stripe.js
    app.customers.set_default_payment_method("user_7", "pm_…")

``ensure`` reads the mirror first: a user already linked to a live customer
is answered from the database, without a call. Otherwise it

1. answers with the customer an earlier ``ensure`` made (``customer:create``
   in the ledger of calls), unless Stripe deleted it since;
2. adopts a customer that already carries the user's id in its metadata
   (``metadata['stripeline_user_id']``, found with the Customers Search API):
   the oldest, if there are several (a create already asked for, whose answer
   was lost, is finished instead: the same key brings the same customer);
3. else creates one through ``app.calls``: the call ``customer:create`` for
   the user is recorded before it is sent, with one idempotency key for the
   user, so many threads, processes and hosts asking at once make exactly one
   customer. The create carries only that key's parameters (the user id in
   the metadata); the email, name and metadata given follow in a second call,
   made once per customer (``customer:update`` ``<customer>:initial``). That
   way a second ``ensure`` with another email, even after a crash, never
   meets a ``CallConflict``: the customer is the same, and the details
   recorded first stay (change them with ``update``);

and links the user to the customer (``Mirror.customer_link``). Every answer
of Stripe is in the mirror when a method returns.

A customer deleted at Stripe (in the Dashboard, or by ``forget``) is not the
user's any more: ``ensure`` makes a new one (``customer:create``
``<user>:after:<deleted customer>``, again exactly one) and moves the link to
it; the other methods raise ``CustomerNotFound`` (also when Stripe answers
a write with "no such customer" before the webhook came: the mirror then
learns it at once).

Payment methods: ``setup_card`` makes a SetupIntent (3-D Secure included),
``payment_methods`` lists the customer's from the mirror (``refresh=True``
asks Stripe first), ``set_default_payment_method`` and
``detach_payment_method`` refuse, before any call, a payment method that is
not attached to this user's customer (``NotYourPaymentMethod``).

Every method has an ``_async`` twin that runs it in a worker thread.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import structlog
from sqlalchemy import update as sql_update

from stripeline.db.engine import connect
from stripeline.declines import DeclineAdvice, advise
from stripeline.errors import (
    CallConflict,
    ConfigError,
    CustomerNotFound,
    NotYourPaymentMethod,
    StripeCardError,
    StripeInvalidRequestError,
)
from stripeline.flows._twin import in_thread
from stripeline.flows.calls import as_dict, params_hash, request_options
from stripeline.inbox import utcnow
from stripeline.mirror._store import apply_states, held_marker, state_from_fetch
from stripeline.mirror.links import CustomerLinkConflict, links
from stripeline.mirror.records import Customer, PaymentMethod

if TYPE_CHECKING:
    from stripeline.app import Stripeline
    from stripeline.flows.privacy import ErasureReport
    from stripeline.mirror.reader import Mirror

__all__ = ["MAX_USER_ID_LENGTH", "UNSET", "USER_KEY", "CardSetup", "Customers", "SetupStatus"]

log = structlog.get_logger("stripeline.customers")

#: The metadata key that names the application user on a Stripe customer.
USER_KEY = "stripeline_user_id"
#: The longest application user id (it is part of the calls' names).
MAX_USER_ID_LENGTH = 100

SetupStatus = Literal[
    "succeeded",
    "requires_action",
    "requires_payment_method",
    "requires_confirmation",
    "processing",
    "canceled",
]


@dataclass(frozen=True)
class CardSetup:
    """What ``setup_card`` did: a SetupIntent and where it stands.

    ``requires_action``: hand ``client_secret`` to Stripe.js
    (``stripe.confirmCardSetup``) for 3-D Secure; ``requires_payment_method``
    without ``decline``: collect the card with ``client_secret`` in the
    browser; with ``decline``: the card was refused (``decline.message`` is
    safe to show); ``succeeded``: the card is saved on the customer.
    """

    status: SetupStatus
    #: The SetupIntent's id (None when Stripe refused the card before making one).
    setup_intent: str | None
    #: For Stripe.js in the browser; never log it.
    client_secret: str | None
    #: The payment method being saved (the new id for a test token).
    payment_method: str | None
    #: Why the card was refused, safe to show, when it was.
    decline: DeclineAdvice | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def requires_action(self) -> bool:
        """3-D Secure: the customer must authenticate in the browser."""
        return self.status == "requires_action"


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: A parameter of ``update`` left out (None would not tell "leave" from "clear").
UNSET: Any = _Unset()


def _check_user(user_id: str) -> None:
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("a user id is a non-empty string")
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise ValueError(f"a user id is at most {MAX_USER_ID_LENGTH} characters")
    if any(char in user_id for char in "'\"\\"):
        raise ValueError("a user id may not contain quotes or backslashes (Stripe's search)")


def _metadata(user_id: str, metadata: Mapping[str, Any] | None) -> dict[str, str]:
    given = {str(k): ("" if v is None else str(v)) for k, v in (metadata or {}).items()}
    if given.get(USER_KEY, user_id) != user_id:
        raise ValueError(f"metadata[{USER_KEY!r}] is stripeline's: it names the user")
    return given


class Customers:
    """The customers flow (``app.customers``); see the module."""

    def __init__(self, app: Stripeline) -> None:
        self._app = app

    # -- the one customer of a user ---------------------------------------------

    def ensure(
        self,
        user_id: str,
        *,
        email: str | None = None,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        account: str | None = None,
    ) -> Customer:
        """The one Stripe customer of application user ``user_id``: the
        linked one, else an adopted or a new one (exactly one, whatever the
        concurrency), linked. ``email``, ``name`` and ``metadata`` are set
        when the customer is made; an existing customer is returned as it is
        (change it with ``update``).

        Raises:
            ValueError: an empty, too long or quoted user id, or a metadata
                ``stripeline_user_id`` naming another user.
            StripeAPIError: Stripe could not be reached or refused a call
                (``retryable`` says whether to try again).
        """
        _check_user(user_id)
        extra = _metadata(user_id, metadata)
        mirror = self._mirror(account)
        stale: str | None = None
        for _ in range(3):
            link = mirror.customer_link(user_id)
            if link is not None:
                customer = self._current(link.customer_id, account)
                if not customer.deleted:
                    return customer
                stale = link.customer_id
            customer = self._find_or_create(user_id, email, name, extra, account)
            if self._link(user_id, customer.id, stale, account):
                return customer
            # Linked meanwhile, to another customer (not by ensure): the link wins.
        raise CustomerLinkConflict(f"the user's link to a customer kept changing ({account=})")

    def _find_or_create(
        self,
        user_id: str,
        email: str | None,
        name: str | None,
        metadata: dict[str, str],
        account: str | None,
    ) -> Customer:
        reference = user_id
        for _ in range(20):  # each step moves past one deleted customer
            record = self._app.calls.record("customer:create", reference, account=account)
            if record is None or record.status != "done" or not record.object_id:
                break
            made = self._current(record.object_id, account)
            if not made.deleted:
                return self._initial_details(made, email, name, metadata, account)
            reference = f"{user_id}:after:{made.id}"
        if record is None:
            # Never asked to create one: a customer of the user's may exist already.
            adopted = self._search(user_id, account)
            if adopted is not None:
                return self._store(adopted, account)
        params = {"metadata": {USER_KEY: user_id}}
        data = self._app.calls.run(
            "customer:create",
            reference,
            params,
            lambda client, key: client.v1.customers.create(
                cast(Any, params), request_options(account, key)
            ),
            find=lambda client: self._search(user_id, account),
            account=account,
        )
        made = self._current(data["id"], account)
        return self._initial_details(made, email, name, metadata, account)

    def _initial_details(
        self,
        customer: Customer,
        email: str | None,
        name: str | None,
        metadata: dict[str, str],
        account: str | None,
    ) -> Customer:
        """Set what the first ``ensure`` gave, once per customer."""
        params: dict[str, Any] = {}
        if email is not None:
            params["email"] = email
        if name is not None:
            params["name"] = name
        if metadata:
            params["metadata"] = metadata
        if not params:
            return customer
        try:
            self._update_call(customer.id, f"{customer.id}:initial", params, account)
        except CallConflict:
            pass  # another ensure set its details first: they stay
        return self._current(customer.id, account)

    def _search(self, user_id: str, account: str | None) -> dict[str, Any] | None:
        """The oldest live customer whose metadata names ``user_id``, or None."""
        from stripeline.gateway.client import stripe_errors

        query = f"metadata['{USER_KEY}']:'{user_id}'"
        with stripe_errors():
            found = [
                as_dict(customer)
                for customer in self._app.calls.client.v1.customers.search(
                    {"query": query, "limit": 100}, request_options(account)
                ).data
            ]
        found = [c for c in found if not c.get("deleted")]
        if not found:
            return None
        found.sort(key=lambda c: (c.get("created") or 0, c["id"]))
        if len(found) > 1:
            log.warning(
                "customer_duplicates",
                action="customer_duplicates",
                adopted=found[0]["id"],
                others=[c["id"] for c in found[1:]],
            )
        return found[0]

    def _link(self, user_id: str, customer_id: str, stale: str | None, account: str | None) -> bool:
        """Link the user to ``customer_id`` (moving a link from the deleted
        ``stale``); False when the user is linked to another customer."""
        mirror = self._mirror(account)
        if stale is not None and stale != customer_id:
            with connect(self._app.engine) as conn:
                conn.execute(
                    sql_update(links)
                    .where(
                        links.c.account == (account or ""),
                        links.c.app_user_id == user_id,
                        links.c.customer_id == stale,
                    )
                    .values(customer_id=customer_id, created_at=utcnow())
                )
            log.info(
                "customer_replaced",
                action="customer_replaced",
                deleted=stale,
                customer=customer_id,
            )
        try:
            mirror.link_customer(user_id, customer_id)
        except CustomerLinkConflict:
            return False
        return True

    # -- changing the customer ----------------------------------------------------

    def update(
        self,
        user_id: str,
        *,
        email: str | None = UNSET,
        name: str | None = UNSET,
        phone: str | None = UNSET,
        address: Mapping[str, str | None] | None = UNSET,
        metadata: Mapping[str, Any] | None = None,
        reference: str | None = None,
        account: str | None = None,
    ) -> Customer:
        """Change the user's customer: each field given is set (None clears
        it); ``metadata`` keys are merged (a key set to "" is removed).

        ``reference`` names this change, so that a retry of it (after a
        crash) is the same call; by default each call is a change of its own.

        Raises:
            CustomerNotFound: the user has no live customer (``ensure`` first).
            ValueError: metadata ``stripeline_user_id`` naming another user.
            StripeAPIError: Stripe refused or could not be reached.
        """
        params: dict[str, Any] = {}
        for field, value in (("email", email), ("name", name), ("phone", phone)):
            if value is not UNSET:
                params[field] = "" if value is None else value
        if address is not UNSET:
            params["address"] = "" if address is None else dict(address)
        customer = self._customer_of(user_id, account)
        if metadata:
            params["metadata"] = _metadata(user_id, metadata)
        if not params:
            return customer
        self._update_call(
            customer.id, f"{customer.id}:{reference or uuid.uuid4().hex}", params, account
        )
        return self._current(customer.id, account)

    def _update_call(
        self, customer_id: str, reference: str, params: dict[str, Any], account: str | None
    ) -> dict[str, Any]:
        with self._gone(customer_id, account):
            return self._app.calls.run(
                "customer:update",
                reference,
                params,
                lambda client, key: client.v1.customers.update(
                    customer_id, cast(Any, params), request_options(account, key)
                ),
                account=account,
            )

    @contextmanager
    def _gone(self, customer_id: str, account: str | None) -> Iterator[None]:
        """Turn Stripe's "no such customer" into ``CustomerNotFound``: the
        customer was deleted and the mirror had not heard of it yet (it has now)."""
        try:
            yield
        except StripeInvalidRequestError as exc:
            if exc.code != "resource_missing":
                raise
            self._refresh("customer", customer_id, account)
            held = self._mirror(account).customer(customer_id)
            if held is None or not held.deleted:
                raise
            raise CustomerNotFound(
                f"this user's Stripe customer {customer_id} was deleted; customers.ensure "
                "makes a new one",
                customer_id=customer_id,
            ) from exc

    # -- payment methods ------------------------------------------------------------

    def setup_card(
        self,
        user_id: str,
        *,
        payment_method: str | None = None,
        usage: Literal["off_session", "on_session"] = "off_session",
        return_url: str | None = None,
        reference: str | None = None,
        account: str | None = None,
    ) -> CardSetup:
        """Save a card on the user's customer with a SetupIntent.

        Without ``payment_method`` the SetupIntent waits for the card the
        browser collects (``client_secret`` for Stripe.js). With one, it is
        confirmed now: ``succeeded`` (the card is saved and in the mirror),
        ``requires_action`` (3-D Secure in the browser; the webhooks bring
        the result) or refused (``decline``). ``return_url`` is where a
        redirecting authentication comes back to. ``reference`` names this
        attempt so that a retry after a crash is the same SetupIntent; by
        default each call makes a new one.

        Raises:
            CustomerNotFound: the user has no live customer (``ensure`` first).
            ModeMismatch: ``payment_method`` is of the other mode.
            StripeAPIError: Stripe refused the request or could not be reached.
        """
        self._app.calls.check_mode(payment_method, account=account)
        customer = self._customer_of(user_id, account)
        params: dict[str, Any] = {
            "customer": customer.id,
            "usage": usage,
            "payment_method_types": ["card"],
            "metadata": {USER_KEY: user_id},
        }
        if payment_method is not None:
            params.update(payment_method=payment_method, confirm=True)
            if return_url is not None:
                params["return_url"] = return_url
        try:
            with self._gone(customer.id, account):
                data = self._app.calls.run(
                    "setup_intent:create",
                    f"{customer.id}:{reference or uuid.uuid4().hex}",
                    params,
                    lambda client, key: client.v1.setup_intents.create(
                        cast(Any, params), request_options(account, key)
                    ),
                    account=account,
                )
        except StripeCardError as exc:
            return CardSetup(
                status="requires_payment_method",
                setup_intent=None,
                client_secret=None,
                payment_method=payment_method,
                decline=advise(exc.decline_code, code=exc.code),
            )
        saved = data.get("payment_method")
        saved_id = saved.get("id") if isinstance(saved, dict) else saved
        if data.get("status") == "succeeded" and saved_id:
            self._refresh("payment_method", saved_id, account)
        return CardSetup(
            status=cast(SetupStatus, data.get("status")),
            setup_intent=data.get("id"),
            client_secret=data.get("client_secret"),
            payment_method=saved_id,
        )

    def payment_methods(
        self, user_id: str, *, refresh: bool = False, account: str | None = None
    ) -> list[PaymentMethod]:
        """The payment methods attached to the user's customer, newest first,
        from the mirror; ``refresh=True`` reads them from Stripe first (and
        writes them to the mirror), for when a webhook may not be in yet.

        Raises:
            CustomerNotFound: the user has no live customer.
            StripeAPIError: (``refresh``) Stripe could not be reached.
        """
        customer = self._customer_of(user_id, account)
        mirror = self._mirror(account)
        if refresh:
            from stripeline.gateway.client import stripe_errors

            with stripe_errors():
                listed = [
                    as_dict(pm)
                    for pm in self._app.calls.client.v1.customers.payment_methods.list(
                        customer.id, {"limit": 100}, request_options(account)
                    ).auto_paging_iter()
                ]
            fetched_at = int(time.time())
            for data in listed:
                self._write(data, "payment_method", data["id"], account, fetched_at)
            attached = {data["id"] for data in listed}
            for held in mirror.payment_methods(customer.id):
                if held.id not in attached:  # detached since: read its state
                    self._refresh("payment_method", held.id, account)
        return mirror.payment_methods(customer.id)

    def set_default_payment_method(
        self, user_id: str, payment_method: str, *, account: str | None = None
    ) -> Customer:
        """Make ``payment_method`` the customer's default for invoices and
        subscriptions (``invoice_settings.default_payment_method``).

        Raises:
            CustomerNotFound: the user has no live customer.
            NotYourPaymentMethod: it is not attached to this user's customer
                (nothing sent).
            ModeMismatch: it is of the other mode (nothing sent).
            StripeAPIError: Stripe refused or could not be reached.
        """
        self._app.calls.check_mode(payment_method, account=account)
        customer = self._customer_of(user_id, account)
        self._owned(customer.id, payment_method, account)
        params = {"invoice_settings": {"default_payment_method": payment_method}}
        self._update_call(customer.id, f"{customer.id}:default:{uuid.uuid4().hex}", params, account)
        return self._current(customer.id, account)

    def detach_payment_method(
        self, user_id: str, payment_method: str, *, account: str | None = None
    ) -> PaymentMethod:
        """Detach ``payment_method`` from the user's customer (Stripe then
        clears it as the default, if it was). A detached payment method
        cannot be used again.

        Raises:
            CustomerNotFound: the user has no live customer.
            NotYourPaymentMethod: it is not attached to this user's customer
                (nothing sent).
            ModeMismatch: it is of the other mode (nothing sent).
            StripeAPIError: Stripe refused or could not be reached.
        """
        self._app.calls.check_mode(payment_method, account=account)
        customer = self._customer_of(user_id, account)
        params = {"customer": customer.id}
        record = self._app.calls.record("payment_method:detach", payment_method, account=account)
        if record is None or record.params_hash != params_hash(params):
            self._owned(customer.id, payment_method, account)
        # Else this customer detached it before: the recorded call answers.
        self._app.calls.run(
            "payment_method:detach",
            payment_method,
            params,
            lambda client, key: client.v1.payment_methods.detach(
                payment_method, {}, request_options(account, key)
            ),
            account=account,
        )
        if customer.default_payment_method == payment_method:
            self._refresh("customer", customer.id, account)  # Stripe cleared the default
        held = self._mirror(account).payment_method(payment_method)
        if held is None:  # the ledger writes Stripe's answer to the mirror; in case
            held = self._refreshed_payment_method(payment_method, account)
        return held

    def _owned(self, customer_id: str, payment_method: str, account: str | None) -> None:
        """Refuse a payment method not attached to ``customer_id``: by the
        mirror, and by Stripe when the mirror does not say it is."""
        held = self._mirror(account).payment_method(payment_method)
        if held is not None and held.customer == customer_id and not held.deleted:
            return
        if held is None or held.customer is None:
            # Unknown here, or not attached as far as we know: ask Stripe (a read).
            fetched = self._refreshed_payment_method(payment_method, account)
            if fetched is not None and fetched.customer == customer_id and not fetched.deleted:
                return
        raise NotYourPaymentMethod(
            f"{payment_method} is not attached to this user's customer ({customer_id}); "
            "nothing was sent to Stripe",
            payment_method=payment_method,
        )

    # -- forgetting and exporting a person (stripeline.flows.privacy) ---------------

    def forget(self, user_id: str, *, account: str | None = None) -> ErasureReport:
        """Erase ``user_id``'s personal data, at Stripe and here
        (``stripeline.flows.privacy.forget``, docs/privacy.md).

        Raises:
            ErasureRefused: the user's customer also serves other users
                (``forget_customer`` erases it for all of them); nothing was done.
            StripeAPIError: Stripe refused the deletion or the anonymisation
                (safe to call again).
        """
        from stripeline.flows import privacy

        return privacy.forget(self._app, user_id, account=account)

    def forget_customer(self, customer_id: str, *, account: str | None = None) -> ErasureReport:
        """``forget`` by Stripe customer id, for every user it serves
        (``stripeline.flows.privacy.forget_customer``). Raises what ``forget`` raises."""
        from stripeline.flows import privacy

        return privacy.forget_customer(self._app, customer_id, account=account)

    def export(self, user_id: str, *, account: str | None = None) -> dict[str, Any]:
        """Everything held about ``user_id``, as plain JSON types
        (``stripeline.flows.privacy.export``, docs/privacy.md)."""
        from stripeline.flows import privacy

        return privacy.export(self._app, user_id, account=account)

    forget_async = in_thread(forget)

    forget_customer_async = in_thread(forget_customer)

    export_async = in_thread(export)

    # -- reading ------------------------------------------------------------------------

    def _mirror(self, account: str | None) -> Mirror:
        return self._app.mirror.for_account(account)

    def _customer_of(self, user_id: str, account: str | None) -> Customer:
        """The user's live customer.

        Raises:
            CustomerNotFound: not linked, or deleted at Stripe.
        """
        _check_user(user_id)
        link = self._mirror(account).customer_link(user_id)
        if link is None:
            raise CustomerNotFound(
                "this user has no Stripe customer: call customers.ensure first; "
                "nothing was sent to Stripe"
            )
        customer = self._current(link.customer_id, account)
        if customer.deleted:
            raise CustomerNotFound(
                f"this user's Stripe customer {customer.id} was deleted; customers.ensure "
                "makes a new one. Nothing was sent to Stripe",
                customer_id=customer.id,
            )
        return customer

    def _current(self, customer_id: str, account: str | None) -> Customer:
        """The customer from the mirror, read from Stripe when not there yet."""
        held = self._mirror(account).customer(customer_id)
        if held is not None:
            return held
        # The refresh writes a deleted row when Stripe has no such customer.
        self._refresh("customer", customer_id, account)
        return cast(Customer, self._mirror(account).customer(customer_id))

    def _store(self, data: dict[str, Any], account: str | None) -> Customer:
        """A customer Stripe just described, written to the mirror."""
        self._write(data, "customer", data["id"], account, int(time.time()))
        return self._current(data["id"], account)

    def _refresh(self, object_type: str, object_id: str, account: str | None) -> None:
        """Read one object from Stripe into the mirror (a deleted row when
        Stripe no longer has it)."""
        fetcher = self._app.fetcher
        if fetcher is None:
            raise ConfigError("the customers flow needs a Stripe key (STRIPE_SECRET_KEY)")
        fetched = fetcher.fetch(object_type, object_id, account)
        self._write(fetched.data, object_type, object_id, account, fetched.fetched_at)

    def _refreshed_payment_method(self, payment_method: str, account: str | None) -> PaymentMethod:
        self._refresh("payment_method", payment_method, account)
        return cast(PaymentMethod, self._mirror(account).payment_method(payment_method))

    def _write(
        self,
        data: dict[str, Any] | None,
        object_type: str,
        object_id: str,
        account: str | None,
        fetched_at: int,
    ) -> None:
        livemode = self._app.settings.livemode
        with connect(self._app.engine) as conn:
            over = held_marker(conn, object_type, account or "", object_id)
            state = state_from_fetch(
                data,
                object_type=object_type,
                object_id=object_id,
                account=account,
                livemode=bool((data or {}).get("livemode", livemode)),
                fetched_at=fetched_at,
                over=over,
            )
            apply_states(conn, [state], now=utcnow())

    # -- async twins ----------------------------------------------------------------------

    ensure_async = in_thread(ensure)

    update_async = in_thread(update)

    setup_card_async = in_thread(setup_card)

    payment_methods_async = in_thread(payment_methods)

    set_default_payment_method_async = in_thread(set_default_payment_method)

    detach_payment_method_async = in_thread(detach_payment_method)
