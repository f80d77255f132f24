"""Stripe's ACH Direct Debit test bank accounts (``us_bank_account``).

A bank debit is an asynchronous payment method: confirming a PaymentIntent
with one moves it to ``processing`` with a ``pending`` charge, and the debit
settles later (``_payment_intents.settle_payment``): it succeeds, or fails
the way the test account says. Stripe documents these test values (routing
number ``110000000``):

==================  ======================================  ==========================
account number      test PaymentMethod                      outcome
==================  ======================================  ==========================
``000123456789``    ``pm_usBankAccount_success``            succeeds
``000111111113``    ``pm_usBankAccount_accountClosed``      fails, ``account_closed``
``000111111116``    ``pm_usBankAccount_noAccount``          fails, ``no_account``
``000222222227``    ``pm_usBankAccount_insufficientFunds``  fails, ``insufficient_funds``
``000333333335``    ``pm_usBankAccount_debitNotAuthorized`` fails, ``debit_not_authorized``
==================  ======================================  ==========================

Any other account number (with any nine-digit routing number) succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass

TEST_ROUTING_NUMBER = "110000000"
BANK_NAME = "STRIPE TEST BANK"


@dataclass(frozen=True)
class TestBankAccount:
    account_number: str
    #: (failure code, message) when the debit is returned; None: it succeeds.
    failure: tuple[str, str] | None = None

    @property
    def last4(self) -> str:
        return self.account_number[-4:]


_SUCCESS = TestBankAccount("000123456789")

BANK_ACCOUNTS_BY_NUMBER: dict[str, TestBankAccount] = {
    "000123456789": _SUCCESS,
    "000111111113": TestBankAccount(
        "000111111113", ("account_closed", "The customer's bank account has been closed.")
    ),
    "000111111116": TestBankAccount(
        "000111111116", ("no_account", "The customer's bank account could not be located.")
    ),
    "000222222227": TestBankAccount(
        "000222222227",
        (
            "insufficient_funds",
            "The customer's account has insufficient funds to cover this payment.",
        ),
    ),
    "000333333335": TestBankAccount(
        "000333333335",
        (
            "debit_not_authorized",
            "The customer has notified their bank that this payment was unauthorized.",
        ),
    ),
}

#: ``pm_usBankAccount_<name>`` test PaymentMethods.
BANK_ACCOUNTS_BY_NAME: dict[str, TestBankAccount] = {
    "success": _SUCCESS,
    "accountClosed": BANK_ACCOUNTS_BY_NUMBER["000111111113"],
    "noAccount": BANK_ACCOUNTS_BY_NUMBER["000111111116"],
    "insufficientFunds": BANK_ACCOUNTS_BY_NUMBER["000222222227"],
    "debitNotAuthorized": BANK_ACCOUNTS_BY_NUMBER["000333333335"],
}

_PREFIX = "pm_usBankAccount_"


def test_bank_account_for(reference: str) -> TestBankAccount | None:
    """The test bank account behind ``pm_usBankAccount_<name>``, if it is one."""
    if reference.startswith(_PREFIX):
        return BANK_ACCOUNTS_BY_NAME.get(reference[len(_PREFIX) :])
    return None


def bank_account_for_number(number: str) -> TestBankAccount:
    """A raw account number's behaviour; unknown numbers succeed."""
    return BANK_ACCOUNTS_BY_NUMBER.get(number) or TestBankAccount(number)
