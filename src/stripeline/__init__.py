"""stripeline: a Stripe integration that is reliable by default.

The public API is what ``__all__`` lists; everything else may change.
"""

from __future__ import annotations

from stripeline.app import ReceivedEvent, Stripeline
from stripeline.errors import (
    ConfigError,
    DatabaseUnavailable,
    EnvelopeError,
    SignatureError,
    StripeAPIError,
    StripeAuthenticationError,
    StripeCardError,
    StripeConnectionError,
    StripeIdempotencyError,
    StripeInvalidRequestError,
    StripelineError,
    StripePermissionError,
    StripeRateLimitError,
    StripeServerError,
)
from stripeline.settings import Settings, load_settings

__version__ = "0.1.0.dev0"

__all__ = [
    "ConfigError",
    "DatabaseUnavailable",
    "EnvelopeError",
    "ReceivedEvent",
    "Settings",
    "SignatureError",
    "StripeAPIError",
    "StripeAuthenticationError",
    "StripeCardError",
    "StripeConnectionError",
    "StripeIdempotencyError",
    "StripeInvalidRequestError",
    "StripePermissionError",
    "StripeRateLimitError",
    "StripeServerError",
    "Stripeline",
    "StripelineError",
    "__version__",
    "load_settings",
]
