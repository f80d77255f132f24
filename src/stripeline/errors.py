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
    ├── CallConflict           a flow's call (``payment_intent:create`` for ``order_42``) was
    │                          made before with other parameters; nothing was sent
    ├── ModeMismatch           a test-mode object used by a live deployment, or the reverse;
    │                          nothing was sent
    ├── DatabaseUnavailable    the database did not answer; try again later
    ├── ErasureRefused         ``forget``: the customer also serves other users; nothing done
    ├── SecondWriteTransaction a handler began a write on another connection to the
    │                          SQLite database its event is processed in (would wait
    │                          for its own event's lock); use ``event.mirror`` /
    │                          ``event.session`` / ``event.connection``
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


class ErasureRefused(StripelineError):
    """The erasure was refused before anything was done (the Stripe customer
    also serves other users of the application)."""


class RetentionTooShort(ConfigError):
    """Events must be kept at least 7 days (Stripe redelivers for 3 days and
    deduplication needs the rows)."""
