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
    #: the card was set up for off-session use; "on_session": every on-session
    #: payment, while off-session ones succeed as if it were set up;
    #: "optional": supported, never asked for. ``decline`` applies once authenticated.
    three_d_secure: str | None = None
    #: The dispute reason opened after the charge ("fraudulent",
    #: "product_not_received"), or "inquiry".
    dispute: str | None = None
    refund_fails: bool = False
    #: Its refunds start ``pending`` and succeed later (``REFUND_PENDING_SECONDS``).
    refund_pending: bool = False
    #: Radar: the risk level of its charges; ``blocked`` ones never reach the network.
    risk_level: str = "normal"
    blocked: bool = False
    #: ``card.checks``: (address_line1_check, address_postal_code_check, cvc_check).
    checks: tuple[str | None, str | None, str] = (None, None, "pass")
    #: The card network sends an early fraud warning after the charge.
    early_fraud_warning: bool = False
    #: Its charges' funds are available at once (``bypassPending``), not after
    #: the payout schedule's delay.
    bypass_pending: bool = False


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
    "fraudulent": "Your card was declined.",
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
    # -- by brand
    "4000002500001001": TestCard("visa", "1001", country="FR"),
    "5105105105105100": TestCard("mastercard", "5100", funding="prepaid"),
    "371449635398431": TestCard("amex", "8431"),
    "6011000990139424": TestCard("discover", "9424"),
    "6011981111111113": TestCard("discover", "1113", funding="debit"),
    "3056930009020004": TestCard("diners", "0004"),
    "36227206271667": TestCard("diners", "1667"),
    "3566002020360505": TestCard("jcb", "0505"),
    "6200000000000005": TestCard("unionpay", "0005"),
    "6200000000000047": TestCard("unionpay", "0047", funding="debit"),
    # -- by country
    "4000000760000002": TestCard("visa", "0002", country="BR"),
    "4000001240000000": TestCard("visa", "0000", country="CA"),
    "4000004840008001": TestCard("visa", "8001", country="MX"),
    "4000008260000000": TestCard("visa", "0000", country="GB"),
    "4000002760000016": TestCard("visa", "0016", country="DE"),
    "4000002500000003": TestCard("visa", "0003", country="FR"),
    "4000003920000003": TestCard("visa", "0003", country="JP"),
    "4000000360000006": TestCard("visa", "0006", country="AU"),
    "4000003560000008": TestCard("visa", "0008", country="IN"),
    # -- fraud prevention (Radar)
    "4100000000000019": TestCard(
        "visa",
        "0019",
        decline=("card_declined", "fraudulent"),
        risk_level="highest",
        blocked=True,
    ),
    "4000000000004954": TestCard(
        "visa",
        "4954",
        decline=("card_declined", "fraudulent"),
        risk_level="highest",
        blocked=True,
    ),
    "4000000000009235": TestCard("visa", "9235", risk_level="elevated"),
    "4000000000000101": TestCard("visa", "0101", checks=(None, None, "fail")),
    "4000000000000036": TestCard("visa", "0036", checks=("pass", "fail", "pass")),
    "4000000000000028": TestCard("visa", "0028", checks=("fail", "pass", "pass")),
    "4000000000000010": TestCard("visa", "0010", checks=("fail", "fail", "pass")),
    "4000000000000044": TestCard("visa", "0044", checks=("unavailable", "unavailable", "pass")),
    # -- disputes and warnings
    "4000000000002685": TestCard("visa", "2685", dispute="product_not_received"),
    "4000000000005423": TestCard("visa", "5423", early_fraud_warning=True),
    # -- refunds and balances (they succeed as plain cards here)
    "4000000000007726": TestCard("visa", "7726", refund_pending=True),
    "4000000000000077": TestCard("visa", "0077", bypass_pending=True),
    "4000003720000278": TestCard("visa", "0278", country="GB", bypass_pending=True),
    # -- 3-D Secure
    "4000003800000446": TestCard("visa", "0446", three_d_secure="on_session"),
    "4000008260003178": TestCard(
        "visa", "3178", three_d_secure="always", decline=("card_declined", "insufficient_funds")
    ),
    "4000000000003063": TestCard("visa", "3063", three_d_secure="always"),
    "4000008400001629": TestCard(
        "visa", "1629", three_d_secure="always", decline=("card_declined", "generic_decline")
    ),
    "4000008400001280": TestCard(
        "visa", "1280", three_d_secure="always", decline=("processing_error", "processing_error")
    ),
    "4000000000003055": TestCard("visa", "3055", three_d_secure="optional"),
    "4000000000003097": TestCard(
        "visa",
        "3097",
        three_d_secure="optional",
        decline=("processing_error", "processing_error"),
    ),
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
    "mastercard_prepaid": _N["5105105105105100"],
    "diners": _N["3056930009020004"],
    "jcb": _N["3566002020360505"],
    "unionpay": _N["6200000000000005"],
    "us": _VISA,
    "br": _N["4000000760000002"],
    "ca": _N["4000001240000000"],
    "mx": _N["4000004840008001"],
    "gb": _N["4000008260000000"],
    "de": _N["4000002760000016"],
    "fr": _N["4000002500000003"],
    "jp": _N["4000003920000003"],
    "au": _N["4000000360000006"],
    "in": _N["4000003560000008"],
    "radarBlock": _N["4100000000000019"],
    "chargeDeclinedFraudulent": _N["4100000000000019"],
    "visa_chargeDeclinedFraudulent": _N["4100000000000019"],
    "riskLevelHighest": _N["4000000000004954"],
    "riskLevelElevated": _N["4000000000009235"],
    "cvcCheckFail": _N["4000000000000101"],
    "avsZipFail": _N["4000000000000036"],
    "avsLine1Fail": _N["4000000000000028"],
    "avsFail": _N["4000000000000010"],
    "avsUnchecked": _N["4000000000000044"],
    "createDisputeProductNotReceived": _N["4000000000002685"],
    "createIssuerFraudRecord": _N["4000000000005423"],
    "pendingRefund": _N["4000000000007726"],
    "bypassPending": _N["4000000000000077"],
    "bypassPendingInternational": _N["4000003720000278"],
    "authenticationRequiredSetupForOffSession": _N["4000003800000446"],
    "authenticationRequiredChargeDeclinedInsufficientFunds": _N["4000008260003178"],
    "threeDSecureRequired": _N["4000000000003063"],
    "threeDSecureRequiredChargeDeclined": _N["4000008400001629"],
    "threeDSecureRequiredProcessingError": _N["4000008400001280"],
    "threeDSecureOptional": _N["4000000000003055"],
    "threeDSecureOptionalProcessingError": _N["4000000000003097"],
    "amex_threeDSecureNotSupported": _N["378282246310005"],
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
