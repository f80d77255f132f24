"""The stripeline error tree.

Every error stripeline raises derives from one root, so an application can
catch ``StripelineError`` and know it came from us::

    StripelineError
    ├── ConfigError            settings that cannot work; the message says what to fix
    ├── SignatureError         a webhook whose Stripe-Signature does not verify
    ├── EnvelopeError          verified JSON that is not a Stripe event envelope
    ├── DatabaseUnavailable    the database did not answer; try again later
    └── HandlerError           an application handler raised while processing an event

The class docstring is the default message.
"""

from __future__ import annotations


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


class DatabaseUnavailable(StripelineError):
    """The database is unavailable; try again later."""


class HandlerError(StripelineError):
    """An event handler failed."""
