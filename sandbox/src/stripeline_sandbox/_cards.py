"""Stripe's test cards: PaymentMethod ids, tokens and raw numbers, with their behaviour."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TestCard:
    brand: str
    last4: str
    funding: str = "credit"
    country: str = "US"
    #: (error code, decline_code) when a charge is attempted.
    decline: tuple[str, str] | None = None
    #: Attaching / setting up fails too (Stripe checks the card on attach).
    declines_on_attach: bool = False
    #: "always": every payment needs 3-D Secure; "unless_setup": only until
    #: the card was set up for off-session use.
    three_d_secure: str | None = None
    #: "fraudulent" opens a dispute, "inquiry" an inquiry, after the charge.
    dispute: str | None = None
    refund_fails: bool = False


DECLINE_MESSAGES = {
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "lost_card": "Your card was declined.",
    "stolen_card": "Your card was declined.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
    "processing_error": "An error occurred while processing your card. Try again in a little bit.",
    "card_velocity_exceeded": "Your card was declined for making repeated attempts too frequently or exceeding its amount limit.",
    "authentication_required": "Your card was declined. This transaction requires authentication.",
}

_VISA = TestCard("visa", "4242")


def _declined(last4: str, code: str, decline_code: str) -> TestCard:
    return TestCard("visa", last4, decline=(code, decline_code), declines_on_attach=True)


CARDS_BY_NUMBER: dict[str, TestCard] = {
    "4242424242424242": _VISA,
    "4000056655665556": TestCard("visa", "5556", funding="debit"),
    "5555555555554444": TestCard("mastercard", "4444"),
    "2223003122003222": TestCard("mastercard", "3222"),
    "5200828282828210": TestCard("mastercard", "8210", funding="debit"),
    "378282246310005": TestCard("amex", "0005"),
    "6011111111111117": TestCard("discover", "1117"),
    "4000000000000002": _declined("0002", "card_declined", "generic_decline"),
    "4000000000009995": _declined("9995", "card_declined", "insufficient_funds"),
    "4000000000009987": _declined("9987", "card_declined", "lost_card"),
    "4000000000009979": _declined("9979", "card_declined", "stolen_card"),
    "4000000000000069": _declined("0069", "expired_card", "expired_card"),
    "4000000000000127": _declined("0127", "incorrect_cvc", "incorrect_cvc"),
    "4000000000000119": _declined("0119", "processing_error", "processing_error"),
    "4000000000006975": _declined("6975", "card_declined", "card_velocity_exceeded"),
    "4000000000000341": TestCard("visa", "0341", decline=("card_declined", "generic_decline")),
    "4000002500003155": TestCard("visa", "3155", three_d_secure="unless_setup"),
    "4000002760003184": TestCard("visa", "3184", three_d_secure="always"),
    "4000000000003220": TestCard("visa", "3220", three_d_secure="always"),
    "4000000000000259": TestCard("visa", "0259", dispute="fraudulent"),
    "4000000000001976": TestCard("visa", "1976", dispute="inquiry"),
    "4000000000005126": TestCard("visa", "5126", refund_fails=True),
}

_N = CARDS_BY_NUMBER
_DECLINE_NAMES = {
    "chargeDeclined": "4000000000000002",
    "chargeDeclinedInsufficientFunds": "4000000000009995",
    "chargeDeclinedLostCard": "4000000000009987",
    "chargeDeclinedStolenCard": "4000000000009979",
    "chargeDeclinedExpiredCard": "4000000000000069",
    "chargeDeclinedIncorrectCvc": "4000000000000127",
    "chargeDeclinedProcessingError": "4000000000000119",
    "chargeDeclinedVelocityLimitExceeded": "4000000000006975",
}

#: ``pm_card_…`` test PaymentMethods (and ``tok_…`` tokens, same names).
CARDS_BY_NAME: dict[str, TestCard] = {
    "visa": _VISA,
    "visa_debit": _N["4000056655665556"],
    "mastercard": _N["5555555555554444"],
    "mastercard_debit": _N["5200828282828210"],
    "amex": _N["378282246310005"],
    "discover": _N["6011111111111117"],
    "chargeCustomerFail": _N["4000000000000341"],
    "authenticationRequired": _N["4000002760003184"],
    "authenticationRequiredOnSetup": _N["4000002500003155"],
    "threeDSecure2Required": _N["4000000000003220"],
    "createDispute": _N["4000000000000259"],
    "createDisputeInquiry": _N["4000000000001976"],
    "refundFail": _N["4000000000005126"],
}
for _name, _number in _DECLINE_NAMES.items():
    # Stripe accepts both spellings: pm_card_chargeDeclined… and pm_card_visa_chargeDeclined….
    CARDS_BY_NAME[_name] = _N[_number]
    CARDS_BY_NAME[f"visa_{_name}"] = _N[_number]


def test_card_for(reference: str) -> TestCard | None:
    """The test card behind ``pm_card_<name>`` or ``tok_<name>``, if it is one."""
    for prefix in ("pm_card_", "tok_"):
        if reference.startswith(prefix):
            return CARDS_BY_NAME.get(reference[len(prefix) :])
    return None


def luhn_ok(number: str) -> bool:
    digits = [int(d) for d in number if d.isdigit()]
    if len(digits) != len(number) or not 12 <= len(digits) <= 19:
        return False
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def card_for_number(number: str) -> TestCard:
    """A raw number's behaviour; any other valid number acts like a plain card."""
    known = CARDS_BY_NUMBER.get(number)
    if known is not None:
        return known
    brand = {"4": "visa", "5": "mastercard", "3": "amex", "6": "discover"}.get(
        number[:1], "unknown"
    )
    return TestCard(brand, number[-4:])
