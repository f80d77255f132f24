"""stripeline: a Stripe integration that is reliable by default.

The public API is what ``__all__`` lists; everything else may change. The
application object and the settings load on first use, so that ``import
stripeline`` (which pytest does for the plugin) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stripeline._lazy import lazy_names as _lazy_names
from stripeline.errors import (
    CallConflict,
    ConfigError,
    CustomerNotFound,
    DatabaseUnavailable,
    DisputeDeadlinePassed,
    DisputeNotFound,
    DisputeNotOpen,
    EnvelopeError,
    ErasureRefused,
    ModeMismatch,
    NotRefundable,
    NotYourPaymentMethod,
    PaymentNotFound,
    RetentionTooShort,
    SecondWriteTransaction,
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
    SubscriptionNotFound,
)

if TYPE_CHECKING:
    from stripeline.app import ReceivedEvent, Stripeline
    from stripeline.declines import (
        DeclineAdvice,
        NextAction,
        advise,
        advise_error,
        register_messages,
    )
    from stripeline.flows.checkout import StartedCheckout
    from stripeline.flows.customers import CardSetup
    from stripeline.flows.entitlements import Entitlements, GracePolicy
    from stripeline.flows.payments import (
        Canceled,
        Declined,
        Fulfilment,
        PaymentOutcome,
        Payments,
        Processing,
        Refunded,
        RequiresAction,
        RequiresCapture,
        RequiresConfirmation,
        RequiresPaymentMethod,
        Succeeded,
    )
    from stripeline.flows.privacy import ErasureReport
    from stripeline.flows.subscriptions import (
        PaymentActionRequired,
        PaymentFailed,
        PreviewLine,
        Started,
        SubscriptionEnded,
        Subscriptions,
        SwapPreview,
        TrialWillEnd,
        UpcomingRenewal,
        UsageReported,
    )
    from stripeline.mirror import Mirror
    from stripeline.settings import Settings, load_settings

__version__ = "0.1.0.dev0"

_LAZY = {
    "Entitlements": "stripeline.flows.entitlements",
    "GracePolicy": "stripeline.flows.entitlements",
    "ErasureReport": "stripeline.flows.privacy",
    "CardSetup": "stripeline.flows.customers",
    "StartedCheckout": "stripeline.flows.checkout",
    "Canceled": "stripeline.flows.payments",
    "Declined": "stripeline.flows.payments",
    "Fulfilment": "stripeline.flows.payments",
    "PaymentOutcome": "stripeline.flows.payments",
    "Payments": "stripeline.flows.payments",
    "Processing": "stripeline.flows.payments",
    "Refunded": "stripeline.flows.payments",
    "RequiresAction": "stripeline.flows.payments",
    "RequiresCapture": "stripeline.flows.payments",
    "RequiresConfirmation": "stripeline.flows.payments",
    "RequiresPaymentMethod": "stripeline.flows.payments",
    "Succeeded": "stripeline.flows.payments",
    "PaymentActionRequired": "stripeline.flows.subscriptions",
    "PaymentFailed": "stripeline.flows.subscriptions",
    "PreviewLine": "stripeline.flows.subscriptions",
    "Started": "stripeline.flows.subscriptions",
    "SubscriptionEnded": "stripeline.flows.subscriptions",
    "Subscriptions": "stripeline.flows.subscriptions",
    "SwapPreview": "stripeline.flows.subscriptions",
    "TrialWillEnd": "stripeline.flows.subscriptions",
    "UpcomingRenewal": "stripeline.flows.subscriptions",
    "UsageReported": "stripeline.flows.subscriptions",
    "DeclineAdvice": "stripeline.declines",
    "NextAction": "stripeline.declines",
    "advise": "stripeline.declines",
    "advise_error": "stripeline.declines",
    "register_messages": "stripeline.declines",
    "Mirror": "stripeline.mirror",
    "ReceivedEvent": "stripeline.app",
    "Stripeline": "stripeline.app",
    "Settings": "stripeline.settings",
    "load_settings": "stripeline.settings",
}

__all__ = [
    "CallConflict",
    "Canceled",
    "CardSetup",
    "ConfigError",
    "CustomerNotFound",
    "DatabaseUnavailable",
    "DeclineAdvice",
    "Declined",
    "DisputeDeadlinePassed",
    "DisputeNotFound",
    "DisputeNotOpen",
    "Entitlements",
    "EnvelopeError",
    "ErasureRefused",
    "ErasureReport",
    "Fulfilment",
    "GracePolicy",
    "Mirror",
    "ModeMismatch",
    "NextAction",
    "NotRefundable",
    "NotYourPaymentMethod",
    "PaymentActionRequired",
    "PaymentFailed",
    "PaymentNotFound",
    "PaymentOutcome",
    "Payments",
    "PreviewLine",
    "Processing",
    "ReceivedEvent",
    "Refunded",
    "RequiresAction",
    "RequiresCapture",
    "RequiresConfirmation",
    "RequiresPaymentMethod",
    "RetentionTooShort",
    "SecondWriteTransaction",
    "Settings",
    "SignatureError",
    "Started",
    "StartedCheckout",
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
    "SubscriptionEnded",
    "SubscriptionNotFound",
    "Subscriptions",
    "Succeeded",
    "SwapPreview",
    "TrialWillEnd",
    "UpcomingRenewal",
    "UsageReported",
    "__version__",
    "advise",
    "advise_error",
    "load_settings",
    "register_messages",
]


__getattr__, __dir__ = _lazy_names(__name__, _LAZY, __all__)
