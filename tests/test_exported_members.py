"""The public API is exactly what each public package's ``__all__`` lists.

After httpx's ``tests/test_exported_members.py``: every listed name exists,
no public member is left out of ``__all__``, and the members are pinned here,
so that a name added to or dropped from the API is a decision a reviewer sees
in this file, not an accident of an import. (``stripeline_sandbox`` pins its
own in ``sandbox/tests``: it is another distribution.)
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

import stripeline

PUBLIC: dict[str, set[str]] = {
    "stripeline": {
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
    },
    "stripeline.contrib.django": {"get_app"},
    "stripeline.core": {"Envelope", "parse_envelope", "sign", "verify"},
    "stripeline.db": {
        "Base",
        "connect",
        "is_postgres",
        "make_engine",
        "migrate",
        "migrations_current",
    },
    "stripeline.web": {"WebhookAnswer", "WebhookIntake", "create_app", "readiness"},
    "stripeline.contrib.fastapi": {
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
    },
    "stripeline.gateway": {
        "API_VERSION",
        "SDK_VERSION",
        "Page",
        "Reader",
        "StripeClient",
        "StripeFetcher",
        "make_client",
        "open_client",
        "pages",
        "stripe_errors",
    },
    "stripeline.sync": {
        "BackfillResult",
        "CatchUpResult",
        "Drift",
        "DriftReport",
        "Progress",
        "TypeDrift",
        "TypeResult",
        "backfill",
        "catch_up",
        "catch_up_gap",
        "check_drift",
        "repair_drift",
        "run_catch_up_forever",
        "run_catch_up_forever_async",
    },
    "stripeline.mirror": {
        "ACTIVE_STATUSES",
        "Charge",
        "CheckoutSession",
        "Customer",
        "CustomerLink",
        "CustomerLinkConflict",
        "Dispute",
        "Invoice",
        "InvoiceLine",
        "Mirror",
        "MirrorRecord",
        "PaymentIntent",
        "PaymentMethod",
        "Price",
        "Product",
        "Refund",
        "Subscription",
        "SubscriptionItem",
        "currency_exponent",
        "to_major",
    },
    "stripeline.testing": {
        "DEFAULT_WEBHOOK_PATH",
        "Delivery",
        "EventFailed",
        "FailedEvent",
        "Order",
        "SandboxControlError",
        "StoredEvent",
        "StripelineEnv",
        "advance_clock",
        "deliver",
        "drain",
        "entitlement_summary",
        "failures",
        "make_event",
        "object_shape",
        "resource_for",
        "sign_event",
    },
}

#: Public modules of packages that keep no ``__all__`` of their own (``contrib``
#: is a namespace of integrations) or that are imported on their own (their
#: dependencies are optional): the module's ``__all__``, pinned the same way.
PUBLIC_MODULES: dict[str, set[str]] = {
    "stripeline.contrib.flask": {
        "EXTENSION_KEY",
        "StripelineFlask",
        "StripelineState",
        "get_mirror",
        "get_state",
        "get_stripeline",
    },
    "stripeline.declines": {
        "CODES",
        "DECLINE_CODES",
        "ENGLISH",
        "ERROR_CODES",
        "FRAUD_CODES",
        "GENERIC_MESSAGE_ID",
        "DeclineAdvice",
        "DeclineRule",
        "NextAction",
        "advise",
        "advise_error",
        "messages_for",
        "register_messages",
    },
    "stripeline.flows.calls": {
        "MAX_KEY_LENGTH",
        "WINDOW",
        "CallRecord",
        "Calls",
        "as_dict",
        "check_account",
        "idempotency_key",
        "params_hash",
        "recorded_error",
        "request_options",
        "write_to_mirror",
    },
    "stripeline.flows.checkout": {
        "CHECKOUT_KEY",
        "Checkout",
        "CheckoutMode",
        "StartedCheckout",
    },
    "stripeline.flows.customers": {
        "MAX_USER_ID_LENGTH",
        "UNSET",
        "USER_KEY",
        "CardSetup",
        "Customers",
        "SetupStatus",
    },
    "stripeline.flows.disputes": {
        "CLOSED_STATUSES",
        "DEADLINE_CHECK_SECONDS",
        "DEFAULT_LEAD_DAYS",
        "EVIDENCE_FIELDS",
        "FILE_FIELDS",
        "OPEN_STATUSES",
        "ORDER_METADATA_KEY",
        "REVIEW_STATUSES",
        "DisputeCase",
        "Disputes",
        "DueAlarm",
        "Funds",
    },
    "stripeline.flows.entitlements": {
        "OPEN_ENDED",
        "Entitlements",
        "GracePolicy",
        "Source",
        "grant_end",
    },
    "stripeline.flows.payments": {
        "FULFILLING_EVENTS",
        "ORDER_KEY",
        "REFUND_KEY",
        "Canceled",
        "Declined",
        "Fulfilment",
        "PaymentOutcome",
        "Payments",
        "Processing",
        "Refunded",
        "RequiresAction",
        "RequiresCapture",
        "RequiresConfirmation",
        "RequiresPaymentMethod",
        "Succeeded",
        "fulfilment_of",
        "outcome_of",
    },
    "stripeline.flows.privacy": {
        "CLOSED_DISPUTE_STATUSES",
        "OPEN_INVOICE_STATUSES",
        "ErasureReport",
        "export",
        "export_async",
        "forget",
        "forget_async",
        "forget_customer",
        "forget_customer_async",
    },
    "stripeline.flows.subscriptions": {
        "DUNNING_EVENTS",
        "SUBSCRIPTION_KEY",
        "PaymentActionRequired",
        "PaymentFailed",
        "PreviewLine",
        "PriceSpec",
        "Started",
        "SubscriptionEnded",
        "Subscriptions",
        "SwapPreview",
        "TrialWillEnd",
        "UpcomingRenewal",
        "UsageReported",
        "notice_of",
    },
    "stripeline.retention": {
        "MIN_AGE",
        "PRUNABLE_STATUSES",
        "PRUNE_INTERVAL",
        "PruneResult",
        "check_age",
        "parse_age",
        "prune",
        "start_pruning",
    },
    "stripeline.sync.eventbridge": {
        "SOURCE",
        "STRIPE_PARTNER_PREFIX",
        "EventBridgeConsumer",
        "unwrap",
    },
    "stripeline.sync.history": {
        "BackfillRun",
        "CatchUpRun",
        "StoredReport",
        "TypeProgress",
        "backfill_progress",
        "catch_up_history",
        "last_verify_report",
        "record_backfill_page",
        "record_catch_up",
        "save_verify_report",
    },
    "stripeline.sync.thin": {
        "READ_KEY",
        "THIN_KEY",
        "ThinReads",
        "hydrate",
        "is_thin",
        "thin_due_at",
    },
    "stripeline.web.console": {"create_console", "hash_password"},
    "stripeline.web.wsgi": {
        "DEFAULT_STOP_TIMEOUT",
        "StripelineWSGI",
        "WorkerThread",
        "make_wsgi_app",
    },
}

#: Names a module gets from ``from __future__ import annotations`` and typing.
_NOT_MEMBERS = {"annotations", "TYPE_CHECKING"}


def _ruff_order(name: str) -> tuple[int, str]:
    """The order ruff (RUF022) keeps ``__all__`` in: CONSTANTS, Classes, functions."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_all_is_pinned_sorted_and_every_name_exists(name: str) -> None:
    package = importlib.import_module(name)
    exported = list(package.__all__)
    assert set(exported) == PUBLIC[name]
    assert len(set(exported)) == len(exported)
    assert exported in (sorted(exported), sorted(exported, key=_ruff_order))
    for member in exported:
        assert getattr(package, member) is not None, member


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_no_public_member_is_left_out_of_all(name: str) -> None:
    package = importlib.import_module(name)
    public = {
        member
        for member in dir(package)
        if not member.startswith("_")
        and member not in _NOT_MEMBERS
        and not isinstance(getattr(package, member), types.ModuleType)
    }
    assert public == set(package.__all__) - {"__version__"}


@pytest.mark.parametrize("name", sorted(PUBLIC_MODULES))
def test_public_modules_pin_their_own_definitions(name: str) -> None:
    """A module's ``__all__`` is pinned, and names every public class, function
    or constant defined in it (its imports are not its members)."""
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert set(exported) == PUBLIC_MODULES[name]
    assert exported in (sorted(exported), sorted(exported, key=_ruff_order))
    for member in exported:
        assert getattr(module, member) is not None, member
    own = {
        member
        for member, value in vars(module).items()
        if not member.startswith("_")
        and getattr(value, "__module__", None) == name
        and isinstance(value, type | types.FunctionType)
    }
    assert own <= set(exported)


def test_every_error_derives_from_the_root() -> None:
    for name in stripeline.__all__:
        value = getattr(stripeline, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, stripeline.StripelineError), name


def test_the_top_level_mirror_is_the_mirror_api() -> None:
    import stripeline.mirror

    assert stripeline.Mirror is stripeline.mirror.Mirror


def test_import_is_cheap() -> None:
    """``import stripeline`` loads neither SQLAlchemy, pydantic nor the SDK."""
    code = (
        "import sys, stripeline; "
        "print(sorted(m for m in ('sqlalchemy', 'pydantic', 'stripe') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert stripeline.Stripeline.__name__ == "Stripeline"
