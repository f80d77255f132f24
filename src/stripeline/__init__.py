"""stripeline: a Stripe integration that is reliable by default.

The public API is what ``__all__`` lists; everything else may change. The
application object and the settings load on first use, so that ``import
stripeline`` (which pytest does for the plugin) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from stripeline.app import ReceivedEvent, Stripeline
    from stripeline.settings import Settings, load_settings

__version__ = "0.1.0.dev0"

_LAZY = {
    "ReceivedEvent": "stripeline.app",
    "Stripeline": "stripeline.app",
    "Settings": "stripeline.settings",
    "load_settings": "stripeline.settings",
}

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stripeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
