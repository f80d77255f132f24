"""The stripeline error tree.

Every error stripeline raises derives from one root, so an application can
catch ``StripelineError`` and know it came from us::

    StripelineError
    ├── ConfigError            settings that cannot work; the message says what to fix
    │   └── RetentionTooShort  an inbox retention under 7 days (``stripeline.retention``)
    ├── SignatureError         a webhook whose Stripe-Signature does not verify
    ├── EnvelopeError          verified JSON that is not a Stripe event envelope
    ├── CustomerLinkConflict   the app user is already linked to another Stripe customer
    │                          (``stripeline.mirror``)
    ├── DatabaseUnavailable    the database did not answer; try again later
    ├── SecondWriteTransaction a handler began a write on another connection to the
    │                          SQLite database its event is processed in (would wait
    │                          for its own event's lock); use ``event.mirror`` /
    │                          ``event.session`` / ``event.connection``
    │   the flows (``app.calls``, ``app.customers``, ``app.payments``, ``app.disputes``);
    │   "nothing was sent": refused before any request to Stripe
    ├── CallConflict           a flow's call (``payment_intent:create`` for ``order_42``) was
    │                          made before with other parameters; nothing was sent
    ├── ModeMismatch           a test-mode object used by a live deployment, or the reverse;
    │                          nothing was sent
    ├── CustomerNotFound       the application user has no (live) Stripe customer: call
    │                          ``customers.ensure`` first; nothing was sent
    ├── NotYourPaymentMethod   a payment method that is not attached to this user's customer;
    │                          nothing was sent
    ├── PaymentNotFound        no payment is known for this order (``app.payments``)
    ├── NotRefundable          a refund for more than is left to refund (``refundable``);
    │                          nothing was sent
    ├── DisputeNotFound        the dispute is not in the mirror (``stripeline.flows.disputes``)
    ├── DisputeNotOpen         the dispute takes no more evidence; nothing was sent
    ├── DisputeDeadlinePassed  the dispute's evidence was due before now; nothing was sent
    ├── ErasureRefused         ``customers.forget``: the customer also serves other users;
    │                          nothing was done (``forget_customer`` erases it for all)
    ├── SubscriptionNotFound   no such subscription (``app.subscriptions``); nothing was sent
    └── StripeAPIError         a read or call to the Stripe API failed (request_id,
        │                      http_status, code, retryable); ``stripeline.gateway``
        │                      turns every ``stripe`` SDK error into one of these
        ├── StripeConnectionError      Stripe could not be reached (network, timeout)
        ├── StripeAuthenticationError  401: the API key is not valid
        ├── StripePermissionError      403: the key may not do this
        ├── StripeRateLimitError       429: too many requests, or the object is busy
        ├── StripeInvalidRequestError  400/404: the request is wrong; do not resend unchanged
        ├── StripeIdempotencyError     the idempotency key was used with other parameters
        ├── StripeCardError            402: a decline (``decline_code``); message safe to show
        └── StripeServerError          5xx or an unexpected answer from Stripe

The class docstring is the default message.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


class StripelineError(Exception):
    """stripeline failed."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (type(self).__doc__ or "").strip()
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ConfigError(StripelineError):
    """The settings are not usable."""


class SignatureError(StripelineError):
    """The Stripe-Signature header does not verify."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        #: A stable snake_case code: ``missing_header``, ``malformed_header``,
        #: ``no_v1_signature``, ``no_matching_signature``, ``timestamp_too_old``,
        #: ``timestamp_in_future``.
        self.reason = reason
        super().__init__(message or reason.replace("_", " "))

    def __repr__(self) -> str:
        return f"SignatureError(reason={self.reason!r})"


class EnvelopeError(StripelineError):
    """The body is not a Stripe event envelope."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        #: ``invalid_json`` or ``not_an_event``.
        self.reason = reason
        super().__init__(message or reason.replace("_", " "))


class CallConflict(StripelineError):
    """This call was already made with other parameters."""

    def __init__(self, message: str | None = None, *, key: str = "") -> None:
        #: The call's ``<action>:<reference>``.
        self.key = key
        super().__init__(message)


class ModeMismatch(StripelineError):
    """The object belongs to the other mode (test or live) than this deployment."""


class DatabaseUnavailable(StripelineError):
    """The database is unavailable; try again later."""


class SecondWriteTransaction(StripelineError):
    """A handler began a write transaction on another connection to the SQLite
    database its event is processed in: SQLite has one writer, the event's own
    transaction holds it, so that write would wait for its own event and fail.
    Write through the event's transaction instead: ``event.mirror``,
    ``event.session``, ``event.connection``, ``event.once()``."""


class StripeAPIError(StripelineError):
    """The Stripe API call failed."""

    def __init__(
        self,
        message: str | None = None,
        *,
        request_id: str | None = None,
        http_status: int | None = None,
        code: str | None = None,
        retryable: bool = False,
    ) -> None:
        #: Stripe's ``Request-Id`` (quote it to Stripe support), when there was a response.
        self.request_id = request_id
        #: The HTTP status of Stripe's answer; None when no answer came.
        self.http_status = http_status
        #: Stripe's error ``code`` (``resource_missing``, ``card_declined``, …).
        self.code = code
        #: True when sending the same request again later may succeed.
        self.retryable = retryable
        super().__init__(message)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, http_status={self.http_status!r}, "
            f"code={self.code!r}, request_id={self.request_id!r}, retryable={self.retryable!r})"
        )


class StripeConnectionError(StripeAPIError):
    """Stripe could not be reached."""


class StripeAuthenticationError(StripeAPIError):
    """Stripe refused the API key."""


class StripePermissionError(StripeAPIError):
    """The API key lacks the permission for this request."""


class StripeRateLimitError(StripeAPIError):
    """Stripe asked us to slow down."""


class StripeInvalidRequestError(StripeAPIError):
    """Stripe rejected the request as invalid."""

    def __init__(
        self, message: str | None = None, *, param: str | None = None, **fields: Any
    ) -> None:
        #: The request parameter Stripe names as wrong, if any.
        self.param = param
        super().__init__(message, **fields)


class StripeIdempotencyError(StripeAPIError):
    """The idempotency key was already used with other parameters."""


class StripeCardError(StripeAPIError):
    """The card was declined."""

    def __init__(
        self, message: str | None = None, *, decline_code: str | None = None, **fields: Any
    ) -> None:
        #: The issuer's reason (``insufficient_funds``, ``lost_card``, …), if given.
        self.decline_code = decline_code
        super().__init__(message, **fields)


class StripeServerError(StripeAPIError):
    """Stripe failed to answer the request."""


class PaymentNotFound(StripelineError):
    """No payment is known for this order (``stripeline.flows.payments``)."""


class NotRefundable(StripelineError):
    """The refund asks for more than is left to refund; nothing was sent to Stripe."""

    def __init__(
        self, message: str | None = None, *, refundable: int = 0, requested: int | None = None
    ) -> None:
        #: What is left to refund (smallest currency unit), counting the
        #: refunds recorded and not refused, answered or not.
        self.refundable = refundable
        #: What this refund asked for (None when it asked for all that was left).
        self.requested = requested
        super().__init__(message)

    def __repr__(self) -> str:
        return f"NotRefundable(refundable={self.refundable!r}, requested={self.requested!r})"


class CustomerNotFound(StripelineError):
    """The application user has no Stripe customer (or it was deleted): call
    ``customers.ensure`` first. Nothing was sent to Stripe."""

    def __init__(self, message: str | None = None, *, customer_id: str | None = None) -> None:
        #: The deleted customer the user was linked to; None when never linked.
        self.customer_id = customer_id
        super().__init__(message)


class NotYourPaymentMethod(StripelineError):
    """The payment method is not attached to this user's customer. Nothing was
    sent to Stripe."""

    def __init__(self, message: str | None = None, *, payment_method: str = "") -> None:
        #: The payment method id that was refused.
        self.payment_method = payment_method


class DisputeNotFound(StripelineError):
    """The dispute is not in the mirror."""

    def __init__(self, message: str | None = None, *, dispute_id: str | None = None) -> None:
        self.dispute_id = dispute_id
        super().__init__(message)


class DisputeNotOpen(StripelineError):
    """The dispute takes no more evidence (submitted or closed); nothing was sent."""

    def __init__(
        self,
        message: str | None = None,
        *,
        dispute_id: str | None = None,
        status: str | None = None,
    ) -> None:
        self.dispute_id = dispute_id
        #: The dispute's status (``under_review``, ``won``, ``lost``, …).
        self.status = status
        super().__init__(message)


class DisputeDeadlinePassed(StripelineError):
    """The dispute's evidence was due before now; nothing was sent."""

    def __init__(
        self,
        message: str | None = None,
        *,
        dispute_id: str | None = None,
        due_by: datetime | None = None,
    ) -> None:
        self.dispute_id = dispute_id
        #: ``evidence_details.due_by`` (None: no response was ever allowed).
        self.due_by = due_by
        super().__init__(message)


class ErasureRefused(StripelineError):
    """The erasure was refused before anything was done (the Stripe customer
    also serves other users of the application)."""


class RetentionTooShort(ConfigError):
    """Events must be kept at least 7 days (Stripe redelivers for 3 days and
    deduplication needs the rows)."""


class SubscriptionNotFound(StripelineError):
    """No such subscription: Stripe knows none with this id, or none was
    started with this reference (``app.subscriptions``); nothing was sent."""
