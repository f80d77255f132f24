"""stripeline: a Stripe integration that is reliable by default."""

from __future__ import annotations

from stripeline.app import ReceivedEvent, Stripeline
from stripeline.errors import (
    ConfigError,
    DatabaseUnavailable,
    EnvelopeError,
    HandlerError,
    SignatureError,
    StripelineError,
)
from stripeline.settings import Settings, load_settings

__version__ = "0.1.0.dev0"

__all__ = [
    "ConfigError",
    "DatabaseUnavailable",
    "EnvelopeError",
    "HandlerError",
    "ReceivedEvent",
    "Settings",
    "SignatureError",
    "Stripeline",
    "StripelineError",
    "__version__",
    "load_settings",
]
