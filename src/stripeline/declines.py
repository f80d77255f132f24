"""Declines, told safely: a decline code becomes a message fit to show the
customer and the next thing they can do.

``advise(decline_code, code=…, locale=…)`` returns a ``DeclineAdvice``;
``advise_error(exc)`` does the same for a ``StripeCardError``. Every decline
code Stripe documents, and the error codes Stripe gives for a declined card
without a decline code (``expired_card``, ``incorrect_cvc``,
``card_declined`` …), has a row in ``CODES``: a message id, a next action
and whether the real reason is withheld.

Codes that would coach a fraudster (``stolen_card``, ``lost_card``,
``fraudulent``, ``pickup_card``, ``merchant_blacklist``, ``restricted_card``,
``security_violation``) read as the generic decline (``generic=True``), word
for word; so does a code stripeline does not know. The real code stays on
the advice for your logs; no message ever contains a code.

Messages are looked up by message id in the locale's dictionary: English
ships (``ENGLISH``); ``register_messages(locale, {...})`` adds an
application's own language, and an id it leaves out falls back to English.
A locale ``"pt-BR"`` is looked up as ``pt-BR``, then ``pt``, then English.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from stripeline.errors import StripeCardError

__all__ = [
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
]

NextAction = Literal[
    "try_another_card", "contact_bank", "retry_later", "authenticate", "fix_details"
]


@dataclass(frozen=True)
class DeclineAdvice:
    """What to tell the customer about a decline, and what they can do next."""

    #: The issuer's decline code as Stripe gave it ("" when none): for your logs.
    decline_code: str
    #: Safe to show the customer (localised).
    message: str
    next_action: NextAction
    #: True when the real reason is withheld from the customer.
    generic: bool
    #: The id of ``message`` in the message dictionaries (``"generic"``, ``"cvc"`` …).
    message_id: str = "generic"
    #: Stripe's error ``code`` as given (``card_declined``, ``expired_card`` …; "" when none).
    code: str = ""


@dataclass(frozen=True)
class DeclineRule:
    """How one code is told: which message, which next action, withheld or not."""

    message_id: str
    next_action: NextAction
    #: True: the code reads as the generic decline (its reason is not shown).
    generic: bool = False


#: The message id every generic decline (fraud codes, unknown codes) reads as.
GENERIC_MESSAGE_ID = "generic"

#: The English messages, by message id: the shipped language and the fallback.
ENGLISH: Mapping[str, str] = MappingProxyType(
    {
        "generic": "Your card was declined. Please use another card or contact your bank.",
        "contact_bank": (
            "Your card was declined. Please contact your bank for details, or use another card."
        ),
        "funds": "Your card has insufficient funds. Please use another card.",
        "expired": "Your card has expired. Please use another card.",
        "cvc": "Your card's security code is incorrect. Please check it and try again.",
        "number": "Your card number is incorrect. Please check it and try again.",
        "postal_code": ("The postal code does not match your card. Please check it and try again."),
        "address": ("The billing address does not match your card. Please check it and try again."),
        "expiry": "Your card's expiration date is invalid. Please check it and try again.",
        "pin_incorrect": "The PIN you entered is incorrect. Please try again.",
        "pin_required": "This card needs its PIN. Please insert the card and enter your PIN.",
        "pin_tries": "Too many incorrect PIN attempts. Please use another card.",
        "processing": (
            "An error occurred while processing your card. Please try again in a moment."
        ),
        "try_later": (
            "Your bank could not process this payment. Please try again; "
            "if it fails again, contact your bank."
        ),
        "bank_unavailable": (
            "We could not reach your bank to approve this payment. "
            "Please try again in a few minutes."
        ),
        "authenticate": (
            "Your bank needs you to confirm this payment. "
            "Please complete the verification to continue."
        ),
        "authentication_failed": (
            "We could not verify this payment with your bank. "
            "Please try again and complete the verification, or use another card."
        ),
        "not_supported": (
            "Your card does not support this type of purchase. Please use another card."
        ),
        "currency": "Your card does not support this currency. Please use another card.",
        "limit": (
            "Your card has reached its spending limit. "
            "Please use another card or contact your bank."
        ),
        "too_many_attempts": (
            "This card was declined too many times. Please try again later or use another card."
        ),
        "duplicate": (
            "A payment with the same amount and card was made moments ago. "
            "Please check whether it went through before trying again."
        ),
        "amount": (
            "Your card cannot be charged this amount. Please contact your bank or use another card."
        ),
        "account_updated": (
            "The details of this card have changed. Please use your new card or another card."
        ),
        "invalid_account": "This card cannot be used. Please use another card.",
        "test_card": "This card cannot be charged. Please use a real card.",
        "not_allowed": (
            "Your card does not allow this payment. Please contact your bank or use another card."
        ),
    }
)


def _r(message_id: str, next_action: NextAction, generic: bool = False) -> DeclineRule:
    return DeclineRule(message_id, next_action, generic)


_WITHHELD = _r(GENERIC_MESSAGE_ID, "try_another_card", generic=True)

#: Codes that would coach a fraudster: they read as the generic decline.
FRAUD_CODES: frozenset[str] = frozenset(
    {
        "fraudulent",
        "lost_card",
        "merchant_blacklist",
        "pickup_card",
        "restricted_card",
        "security_violation",
        "stolen_card",
    }
)

_DECLINE_RULES: dict[str, DeclineRule] = {
    "approve_with_id": _r("try_later", "retry_later"),
    "authentication_not_handled": _r("authenticate", "authenticate"),
    "authentication_required": _r("authenticate", "authenticate"),
    "call_issuer": _r("contact_bank", "contact_bank"),
    "card_not_supported": _r("not_supported", "try_another_card"),
    "card_velocity_exceeded": _r("limit", "contact_bank"),
    "currency_not_supported": _r("currency", "try_another_card"),
    "do_not_honor": _r("contact_bank", "contact_bank"),
    "do_not_try_again": _r("contact_bank", "contact_bank"),
    "duplicate_transaction": _r("duplicate", "retry_later"),
    "expired_card": _r("expired", "try_another_card"),
    "fraudulent": _WITHHELD,
    "generic_decline": _WITHHELD,
    "incorrect_address": _r("address", "fix_details"),
    "incorrect_cvc": _r("cvc", "fix_details"),
    "incorrect_number": _r("number", "fix_details"),
    "incorrect_pin": _r("pin_incorrect", "fix_details"),
    "incorrect_zip": _r("postal_code", "fix_details"),
    "insufficient_funds": _r("funds", "try_another_card"),
    "invalid_account": _r("invalid_account", "try_another_card"),
    "invalid_amount": _r("amount", "contact_bank"),
    "invalid_cvc": _r("cvc", "fix_details"),
    "invalid_expiry_month": _r("expiry", "fix_details"),
    "invalid_expiry_year": _r("expiry", "fix_details"),
    "invalid_number": _r("number", "fix_details"),
    "invalid_pin": _r("pin_incorrect", "fix_details"),
    "issuer_not_available": _r("bank_unavailable", "retry_later"),
    "lost_card": _WITHHELD,
    "merchant_blacklist": _WITHHELD,
    "mobile_device_authentication_required": _r("authenticate", "authenticate"),
    "new_account_information_available": _r("account_updated", "try_another_card"),
    "no_action_taken": _r("contact_bank", "contact_bank"),
    "not_permitted": _r("not_allowed", "contact_bank"),
    "offline_pin_required": _r("pin_required", "fix_details"),
    "online_or_offline_pin_required": _r("pin_required", "fix_details"),
    "pickup_card": _WITHHELD,
    "pin_try_exceeded": _r("pin_tries", "try_another_card"),
    "processing_error": _r("processing", "retry_later"),
    "reenter_transaction": _r("try_later", "retry_later"),
    "restricted_card": _WITHHELD,
    "revocation_of_all_authorizations": _r("contact_bank", "contact_bank"),
    "revocation_of_authorization": _r("contact_bank", "contact_bank"),
    "security_violation": _WITHHELD,
    "service_not_allowed": _r("not_allowed", "contact_bank"),
    "stolen_card": _WITHHELD,
    "stop_payment_order": _r("contact_bank", "contact_bank"),
    "testmode_decline": _r("test_card", "try_another_card"),
    "transaction_not_allowed": _r("not_allowed", "contact_bank"),
    "try_again_later": _r("try_later", "retry_later"),
    "withdrawal_count_limit_exceeded": _r("limit", "try_another_card"),
}

#: Every card decline code Stripe documents (``decline_code`` of a card error).
DECLINE_CODES: frozenset[str] = frozenset(_DECLINE_RULES)

_ERROR_ONLY_RULES: dict[str, DeclineRule] = {
    "card_declined": _WITHHELD,
    "card_decline_rate_limit_exceeded": _r("too_many_attempts", "retry_later"),
    "payment_intent_authentication_failure": _r("authentication_failed", "authenticate"),
    "setup_intent_authentication_failure": _r("authentication_failed", "authenticate"),
}

#: Stripe error ``code`` values that mean a declined card, read when the error
#: has no ``decline_code`` (the ones shared with ``DECLINE_CODES`` are told alike).
ERROR_CODES: frozenset[str] = frozenset(
    {
        *_ERROR_ONLY_RULES,
        "authentication_required",
        "expired_card",
        "incorrect_address",
        "incorrect_cvc",
        "incorrect_number",
        "incorrect_zip",
        "invalid_cvc",
        "invalid_expiry_month",
        "invalid_expiry_year",
        "invalid_number",
        "processing_error",
    }
)

#: Every code stripeline tells apart: decline codes and error codes, one rule each.
CODES: Mapping[str, DeclineRule] = MappingProxyType(
    dict(sorted({**_DECLINE_RULES, **_ERROR_ONLY_RULES}.items()))
)

_lock = threading.Lock()
# Registered locales (normalised: lower case, "-" separated) → their messages.
_registered: dict[str, dict[str, str]] = {}
_ANY_CODE = re.compile(
    r"\b(" + "|".join(sorted(map(re.escape, CODES), key=len, reverse=True)) + r")\b"
)


def _normalise(locale: str) -> str:
    return locale.strip().replace("_", "-").lower()


def _chain(locale: str) -> list[str]:
    """``pt-BR`` → ``["pt-br", "pt"]`` (English is the last resort, not listed)."""
    normal = _normalise(locale)
    chain = [normal] if normal else []
    language = normal.split("-", 1)[0]
    if language and language != normal:
        chain.append(language)
    return chain


def _message(message_id: str, locale: str) -> str:
    registered = _registered  # read once: register_messages replaces, never mutates
    for name in _chain(locale):
        text = registered.get(name, {}).get(message_id)
        if text is not None:
            return text
    return ENGLISH[message_id]


def register_messages(locale: str, messages: Mapping[str, str]) -> None:
    """Add (or replace) messages for ``locale`` (``"fr"``, ``"pt-BR"`` …), by message id.

    Ids left out fall back to the language without its region (``pt``),
    then to English. Registering again for a locale updates its dictionary.

    Raises:
        ValueError: ``locale`` is empty, an id is not one of ``ENGLISH``'s,
            a message is empty or not a string, or a message contains a
            Stripe code (a message is shown to the customer as is).
    """
    name = _normalise(locale)
    if not name:
        raise ValueError("locale must not be empty")
    unknown = sorted(set(messages) - set(ENGLISH))
    if unknown:
        raise ValueError(f"unknown message ids {unknown}; the ids are those of ENGLISH")
    for message_id, text in messages.items():
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"message {message_id!r} must be a non-empty string")
        found = _ANY_CODE.search(text.lower())
        if found:
            raise ValueError(
                f"message {message_id!r} contains the code {found.group(1)!r}; "
                "a message is shown to the customer and must not name a code"
            )
    global _registered
    with _lock:
        updated = {key: dict(value) for key, value in _registered.items()}
        updated.setdefault(name, {}).update(messages)
        _registered = updated


def messages_for(locale: str = "en") -> dict[str, str]:
    """Every message for ``locale``, by message id, with the fallbacks applied
    (to hand a front end its dictionary)."""
    return {message_id: _message(message_id, locale) for message_id in ENGLISH}


def advise(
    decline_code: str | None, *, code: str | None = None, locale: str = "en"
) -> DeclineAdvice:
    """The advice for a decline (``decline_code``; Stripe's error ``code``
    when there is no decline code, e.g. ``expired_card``).

    A decline code stripeline does not know, or no code at all, reads as the
    generic decline: the safe answer for a reason it cannot vouch for.
    """
    if decline_code:
        rule = CODES.get(decline_code, _WITHHELD)
    elif code:
        rule = CODES.get(code, _WITHHELD)
    else:
        rule = _WITHHELD
    return DeclineAdvice(
        decline_code=decline_code or "",
        message=_message(rule.message_id, locale),
        next_action=rule.next_action,
        generic=rule.generic,
        message_id=rule.message_id,
        code=code or "",
    )


def advise_error(exc: StripeCardError, *, locale: str = "en") -> DeclineAdvice:
    """The advice for a card error as ``stripeline.gateway`` raises it
    (its ``decline_code``, else its ``code``)."""
    return advise(exc.decline_code, code=exc.code, locale=locale)
