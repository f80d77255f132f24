"""Declines told safely: every code Stripe documents has a safe message and a
next action, fraud codes read as the generic decline, messages localise with
a fallback to English, the sandbox's decline cards give the mapped advice
through the official SDK, and docs/errors.md's table is the module's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import pytest
from stripe import StripeClient

from stripeline import StripeCardError
from stripeline.declines import (
    CODES,
    DECLINE_CODES,
    ENGLISH,
    ERROR_CODES,
    FRAUD_CODES,
    GENERIC_MESSAGE_ID,
    DeclineAdvice,
    NextAction,
    advise,
    advise_error,
    messages_for,
    register_messages,
)
from stripeline.gateway import stripe_errors
from stripeline_sandbox import _cards

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "errors.md"

GENERIC = ENGLISH[GENERIC_MESSAGE_ID]

# Stripe's card decline codes (docs.stripe.com/declines/codes), written out
# here so that a row dropped from the module fails this test.
STRIPE_DECLINE_CODES = {
    "approve_with_id",
    "authentication_not_handled",
    "authentication_required",
    "call_issuer",
    "card_not_supported",
    "card_velocity_exceeded",
    "currency_not_supported",
    "do_not_honor",
    "do_not_try_again",
    "duplicate_transaction",
    "expired_card",
    "fraudulent",
    "generic_decline",
    "incorrect_address",
    "incorrect_cvc",
    "incorrect_number",
    "incorrect_pin",
    "incorrect_zip",
    "insufficient_funds",
    "invalid_account",
    "invalid_amount",
    "invalid_cvc",
    "invalid_expiry_month",
    "invalid_expiry_year",
    "invalid_number",
    "invalid_pin",
    "issuer_not_available",
    "lost_card",
    "merchant_blacklist",
    "mobile_device_authentication_required",
    "new_account_information_available",
    "no_action_taken",
    "not_permitted",
    "offline_pin_required",
    "online_or_offline_pin_required",
    "pickup_card",
    "pin_try_exceeded",
    "processing_error",
    "reenter_transaction",
    "restricted_card",
    "revocation_of_all_authorizations",
    "revocation_of_authorization",
    "security_violation",
    "service_not_allowed",
    "stolen_card",
    "stop_payment_order",
    "testmode_decline",
    "transaction_not_allowed",
    "try_again_later",
    "withdrawal_count_limit_exceeded",
}

# Error codes Stripe gives for a declined card, with or without a decline code.
STRIPE_ERROR_CODES = {
    "card_declined",
    "card_decline_rate_limit_exceeded",
    "expired_card",
    "incorrect_cvc",
    "incorrect_number",
    "incorrect_zip",
    "invalid_cvc",
    "invalid_expiry_month",
    "invalid_expiry_year",
    "invalid_number",
    "processing_error",
    "authentication_required",
    "payment_intent_authentication_failure",
}

FRAUD = {
    "fraudulent",
    "lost_card",
    "merchant_blacklist",
    "pickup_card",
    "restricted_card",
    "security_violation",
    "stolen_card",
}

# Stripe's guidance for the common declines, code by code (docs.stripe.com/declines/codes).
FACTS_EXPECTED: dict[str, tuple[NextAction, bool]] = {
    "generic_decline": ("try_another_card", True),
    "insufficient_funds": ("try_another_card", False),
    "lost_card": ("try_another_card", True),
    "stolen_card": ("try_another_card", True),
    "fraudulent": ("try_another_card", True),
    "expired_card": ("try_another_card", False),
    "incorrect_cvc": ("fix_details", False),
    "processing_error": ("retry_later", False),
    "card_velocity_exceeded": ("contact_bank", False),
    "authentication_required": ("authenticate", False),
    "card_declined": ("try_another_card", True),
}


# -- the table -------------------------------------------------------------------------


def test_every_stripe_decline_code_is_mapped() -> None:
    assert STRIPE_DECLINE_CODES <= DECLINE_CODES
    assert STRIPE_ERROR_CODES <= ERROR_CODES
    assert set(CODES) == DECLINE_CODES | ERROR_CODES


@pytest.mark.parametrize("code", sorted(FACTS_EXPECTED))
def test_the_facts_sheets_codes_get_its_advice(code: str) -> None:
    next_action, generic = FACTS_EXPECTED[code]
    advice = advise(code)
    assert (advice.next_action, advice.generic) == (next_action, generic)


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_code_has_a_message_and_a_next_action(code: str) -> None:
    advice = advise(code) if code in DECLINE_CODES else advise(None, code=code)
    rule = CODES[code]
    assert advice.message == ENGLISH[rule.message_id]
    assert advice.message.strip()
    assert advice.next_action in get_args(NextAction)
    assert advice.message_id == rule.message_id


def test_no_message_contains_a_code() -> None:
    for message_id, message in ENGLISH.items():
        assert "_" not in message, message_id
        for code in CODES:
            assert code not in message.lower(), (message_id, code)


@pytest.mark.parametrize("code", sorted(FRAUD))
def test_fraud_codes_read_exactly_as_the_generic_decline(code: str) -> None:
    assert code in FRAUD_CODES
    advice = advise(code)
    generic = advise("generic_decline")
    assert advice.generic is True
    assert advice.message == generic.message == GENERIC
    assert advice.next_action == generic.next_action
    assert advice.message_id == GENERIC_MESSAGE_ID
    # The real code stays on the advice, for the logs.
    assert advice.decline_code == code


def test_only_the_generic_codes_use_the_generic_message() -> None:
    generic = {code for code, rule in CODES.items() if rule.generic}
    assert generic == FRAUD | {"generic_decline", "card_declined"}
    assert {
        code for code, rule in CODES.items() if rule.message_id == GENERIC_MESSAGE_ID
    } == generic
    assert FRAUD_CODES == FRAUD


@pytest.mark.parametrize(
    ("decline_code", "code"),
    [
        ("highest_risk_level", "card_declined"),  # not a documented decline code
        ("a_code_stripe_adds_tomorrow", None),
        (None, "a_code_stripe_adds_tomorrow"),
        (None, None),
        ("", ""),
    ],
)
def test_unknown_or_missing_codes_read_as_generic(
    decline_code: str | None, code: str | None
) -> None:
    advice = advise(decline_code, code=code)
    assert advice.generic is True
    assert advice.message == GENERIC
    assert advice.next_action == "try_another_card"
    assert advice.decline_code == (decline_code or "")
    assert advice.code == (code or "")


def test_the_decline_code_wins_over_the_error_code() -> None:
    assert advise("insufficient_funds", code="card_declined").message_id == "funds"
    # An unknown decline code is not rescued by a known error code: withheld.
    assert advise("new_risk_reason", code="incorrect_cvc").generic is True
    # Without a decline code, the error code is read.
    advice = advise(None, code="incorrect_cvc")
    assert (advice.message_id, advice.next_action, advice.generic) == ("cvc", "fix_details", False)
    assert advice.decline_code == ""
    assert advice.code == "incorrect_cvc"


def test_next_actions_by_kind() -> None:
    assert advise("authentication_required").next_action == "authenticate"
    assert advise(None, code="payment_intent_authentication_failure").next_action == "authenticate"
    assert advise("incorrect_number").next_action == "fix_details"
    assert advise("invalid_expiry_year").next_action == "fix_details"
    assert advise("try_again_later").next_action == "retry_later"
    assert advise("issuer_not_available").next_action == "retry_later"
    assert advise("do_not_honor").next_action == "contact_bank"
    assert advise("call_issuer").next_action == "contact_bank"
    assert advise("card_not_supported").next_action == "try_another_card"


def test_every_message_id_is_used_and_every_rule_has_an_english_message() -> None:
    used = {rule.message_id for rule in CODES.values()}
    assert used == set(ENGLISH)


def test_advise_error_reads_the_errors_codes() -> None:
    exc = StripeCardError("Your card was declined.", decline_code="lost_card", code="card_declined")
    advice = advise_error(exc)
    assert advice == DeclineAdvice(
        decline_code="lost_card",
        message=GENERIC,
        next_action="try_another_card",
        generic=True,
        message_id=GENERIC_MESSAGE_ID,
        code="card_declined",
    )
    no_decline_code = StripeCardError("Your card has expired.", code="expired_card")
    assert advise_error(no_decline_code).message_id == "expired"


# -- localisation ----------------------------------------------------------------------
# Pseudo-locales ("qa", "qb-…") that nothing else registers: registrations are
# process-wide.


def test_a_registered_locale_is_used_and_missing_ids_fall_back_to_english() -> None:
    register_messages("qa", {"funds": "QA funds.", GENERIC_MESSAGE_ID: "QA declined."})
    assert advise("insufficient_funds", locale="qa").message == "QA funds."
    assert advise("stolen_card", locale="qa").message == "QA declined."
    assert advise("generic_decline", locale="qa").message == "QA declined."
    # Not registered for "qa": English.
    assert advise("expired_card", locale="qa").message == ENGLISH["expired"]
    # English itself is untouched.
    assert advise("insufficient_funds").message == ENGLISH["funds"]


def test_a_regional_locale_falls_back_to_its_language_then_english() -> None:
    register_messages("qb", {"funds": "QB funds.", "cvc": "QB cvc."})
    register_messages("qb_XY", {"funds": "QB-XY funds."})
    assert advise("insufficient_funds", locale="qb-XY").message == "QB-XY funds."
    assert advise("insufficient_funds", locale="QB_xy").message == "QB-XY funds."
    assert advise("incorrect_cvc", locale="qb-XY").message == "QB cvc."
    assert advise("expired_card", locale="qb-XY").message == ENGLISH["expired"]
    assert advise("insufficient_funds", locale="qb-ZZ").message == "QB funds."
    assert advise("insufficient_funds", locale="zz-unknown").message == ENGLISH["funds"]


def test_registering_again_updates_the_locale() -> None:
    register_messages("qc", {"funds": "first", "cvc": "cvc one"})
    register_messages("qc", {"funds": "second"})
    assert advise("insufficient_funds", locale="qc").message == "second"
    assert advise("incorrect_cvc", locale="qc").message == "cvc one"


def test_messages_for_gives_a_whole_dictionary_with_fallbacks() -> None:
    register_messages("qd", {"funds": "QD funds."})
    messages = messages_for("qd-AB")
    assert set(messages) == set(ENGLISH)
    assert messages["funds"] == "QD funds."
    assert messages["cvc"] == ENGLISH["cvc"]
    assert messages_for() == dict(ENGLISH)


@pytest.mark.parametrize(
    ("locale", "messages", "match"),
    [
        ("qe", {"no_such_id": "x"}, "unknown message ids"),
        ("qe", {"funds": ""}, "non-empty"),
        ("qe", {"funds": 3}, "non-empty"),
        ("qe", {"funds": "Refusée : stolen_card"}, "stolen_card"),
        ("qe", {"generic": "This looks Fraudulent."}, "fraudulent"),
        ("  ", {"funds": "x"}, "locale"),
    ],
)
def test_register_messages_refuses_what_cannot_be_shown(
    locale: str, messages: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        register_messages(locale, messages)
    # Nothing of a refused registration is kept.
    assert advise("insufficient_funds", locale="qe").message == ENGLISH["funds"]


# -- the sandbox's decline cards, through the official SDK ----------------------------

# pm_card_<name> → (Stripe's error code, decline code, expected message id, next action)
DECLINE_CARDS: dict[str, tuple[str, str, str, NextAction]] = {
    "chargeDeclined": ("card_declined", "generic_decline", "generic", "try_another_card"),
    "chargeDeclinedInsufficientFunds": (
        "card_declined",
        "insufficient_funds",
        "funds",
        "try_another_card",
    ),
    "chargeDeclinedLostCard": ("card_declined", "lost_card", "generic", "try_another_card"),
    "chargeDeclinedStolenCard": ("card_declined", "stolen_card", "generic", "try_another_card"),
    "chargeDeclinedExpiredCard": ("expired_card", "expired_card", "expired", "try_another_card"),
    "chargeDeclinedIncorrectCvc": ("incorrect_cvc", "incorrect_cvc", "cvc", "fix_details"),
    "chargeDeclinedProcessingError": (
        "processing_error",
        "processing_error",
        "processing",
        "retry_later",
    ),
    "chargeDeclinedVelocityLimitExceeded": (
        "card_declined",
        "card_velocity_exceeded",
        "limit",
        "contact_bank",
    ),
    "chargeCustomerFail": ("card_declined", "generic_decline", "generic", "try_another_card"),
    # Radar blocks: the real reason is withheld.
    "chargeDeclinedFraudulent": ("card_declined", "fraudulent", "generic", "try_another_card"),
    "radarBlock": ("card_declined", "fraudulent", "generic", "try_another_card"),
    "riskLevelHighest": ("card_declined", "fraudulent", "generic", "try_another_card"),
    # 3-D Secure is offered, never asked for: the decline comes at once.
    "threeDSecureOptionalProcessingError": (
        "processing_error",
        "processing_error",
        "processing",
        "retry_later",
    ),
}


def test_every_decline_card_of_the_sandbox_is_driven() -> None:
    """Every card that declines on a plain confirm; those that ask for 3-D
    Secure first (``always``) decline only once authenticated."""
    declining = {
        name
        for name, card in _cards.CARDS_BY_NAME.items()
        if card.decline is not None
        and not name.startswith("visa_")
        and card.three_d_secure != "always"
    }
    assert declining == set(DECLINE_CARDS)


def _declined(client: StripeClient, payment_method: str) -> StripeCardError:
    with pytest.raises(StripeCardError) as info, stripe_errors():
        client.v1.payment_intents.create(
            {
                "amount": 2000,
                "currency": "usd",
                "payment_method": payment_method,
                "confirm": True,
            }
        )
    return info.value


@pytest.mark.parametrize("name", sorted(DECLINE_CARDS))
def test_each_decline_card_gives_its_mapped_advice(stripe_client: StripeClient, name: str) -> None:
    code, decline_code, message_id, next_action = DECLINE_CARDS[name]
    exc = _declined(stripe_client, f"pm_card_{name}")
    assert (exc.code, exc.decline_code, exc.http_status) == (code, decline_code, 402)
    assert exc.request_id
    advice = advise_error(exc)
    assert advice == advise(decline_code, code=code)
    assert advice.message == ENGLISH[message_id]
    assert advice.next_action == next_action
    assert advice.generic is (message_id == GENERIC_MESSAGE_ID)
    assert decline_code not in advice.message and code not in advice.message


def test_a_stolen_card_reads_as_a_plain_decline_in_the_applications_language(
    stripe_client: StripeClient,
) -> None:
    register_messages("qf", {GENERIC_MESSAGE_ID: "QF declined."})
    stolen = advise_error(_declined(stripe_client, "pm_card_chargeDeclinedStolenCard"), locale="qf")
    plain = advise_error(_declined(stripe_client, "pm_card_chargeDeclined"), locale="qf")
    assert stolen.message == plain.message == "QF declined."
    assert stolen.decline_code == "stolen_card"


# -- docs/errors.md ----------------------------------------------------------------------

ROW = re.compile(
    r"^\|\s*`(?P<code>[a-z_]+)`\s*\|\s*(?P<kind>[a-z ]+?)\s*\|\s*`(?P<id>[a-z_]+)`\s*\|"
    r"\s*(?P<message>[^|]+?)\s*\|\s*`(?P<action>[a-z_]+)`\s*\|\s*(?P<generic>yes)?\s*\|\s*$",
    re.MULTILINE,
)


def _kind(code: str) -> str:
    if code in DECLINE_CODES and code in ERROR_CODES:
        return "both"
    return "decline code" if code in DECLINE_CODES else "error code"


def test_the_docs_decline_table_is_the_modules() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("### The decline table", 1)[1].split("\n## ", 1)[0]
    rows = {m["code"]: m for m in ROW.finditer(section)}
    assert list(rows) == list(CODES), "docs/errors.md lists other codes, or in another order"
    for code, rule in CODES.items():
        row = rows[code]
        assert row["kind"] == _kind(code), code
        assert row["id"] == rule.message_id, code
        assert row["message"] == ENGLISH[rule.message_id], code
        assert row["action"] == rule.next_action, code
        assert (row["generic"] == "yes") is rule.generic, code


def test_the_docs_examples_run(stripe_client: StripeClient) -> None:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(blocks) == 2
    namespace: dict[str, Any] = {"__name__": "docs_errors"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - the docs' own example
    pay = namespace["pay"]
    assert pay(stripe_client, "pm_card_chargeDeclinedStolenCard", 1500) == {
        "status": "declined",
        "message": GENERIC,
        "next": "try_another_card",
    }
    assert pay(stripe_client, "pm_card_chargeDeclinedIncorrectCvc", 1500)["next"] == "fix_details"
    assert pay(stripe_client, "pm_card_visa", 1500) == {"status": "succeeded"}
    assert pay(stripe_client, "pm_card_chargeDeclinedInsufficientFunds", 1500, "fr") == {
        "status": "declined",
        "message": "Le solde de votre carte est insuffisant. Utilisez une autre carte.",
        "next": "try_another_card",
    }
