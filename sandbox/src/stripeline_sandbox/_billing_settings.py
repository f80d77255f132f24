"""Billing settings of one account, and billing time.

Settings (``POST /_sandbox/billing``) stand for the Dashboard's subscription
settings: the retry schedule of failed invoice payments (days between
attempts; the default, 7 retries over 14 days, is 8 tries in two weeks like
Smart Retries), what happens when retries are exhausted (``cancel``, ``unpaid``
or ``past_due`` = leave it), how many days before a renewal
``invoice.upcoming`` is sent, and how long a subscription's draft invoice
waits before it is finalised and charged (Stripe: about an hour).

Billing time: objects of a customer attached to a test clock live at that
clock's ``frozen_time``; every other object lives at the sandbox clock.
While due work runs (a renewal, a retry…), "now" is the moment that work
was due, so objects show the time they would have had at Stripe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stripeline_sandbox._errors import invalid
from stripeline_sandbox._routes import Call, Endpoint, Request, as_int
from stripeline_sandbox._state import Account, Obj

DAY = 86400
DEFAULT_RETRY_DAYS: tuple[int, ...] = (1, 2, 3, 3, 2, 2, 1)
AFTER_RETRIES = ("cancel", "unpaid", "past_due")
DEFAULT_UPCOMING_DAYS = 7
DEFAULT_FINALIZE_DELAY = 3600
#: An ``incomplete`` subscription expires 23 hours after it was created.
INCOMPLETE_EXPIRY = 23 * 3600
#: ``customer.subscription.trial_will_end`` comes this long before the trial ends.
TRIAL_WILL_END_NOTICE = 3 * DAY
_SETTINGS = "__billing_settings__"
_CURSOR = "__billing_cursor__"


@dataclass
class BillingSettings:
    retry_days: tuple[int, ...] = DEFAULT_RETRY_DAYS
    after_retries: str = "cancel"
    upcoming_days: int = DEFAULT_UPCOMING_DAYS
    finalize_delay: int = DEFAULT_FINALIZE_DELAY


def settings_of(account: Account) -> BillingSettings:
    found = account.hidden(_SETTINGS).get("settings")
    if not isinstance(found, BillingSettings):
        found = BillingSettings()
        account.hidden(_SETTINGS)["settings"] = found
    return found


def billing_now(call: Call, clock_id: str | None) -> int:
    """The time of a test clock (``clock_id``) or of the sandbox, as billing sees it."""
    if clock_id:
        clock = call.account.objects.get(clock_id)
        if clock is not None:
            return int(clock["frozen_time"])
    cursor = call.account.hidden(_CURSOR).get("now")
    return int(cursor) if cursor is not None else call.now()


def set_cursor(account: Account, moment: int | None) -> None:
    """Pin sandbox-clock billing time to ``moment`` while due work runs (None: unpin)."""
    account.hidden(_CURSOR)["now"] = moment


def _days(value: Any) -> tuple[int, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    days = tuple(as_int(str(v).strip(), "retry_days", minimum=0) for v in items if str(v).strip())
    return days


def show_billing_settings(found: BillingSettings) -> Obj:
    return {
        "object": "billing_settings",
        "retry_days": list(found.retry_days),
        "after_retries": found.after_retries,
        "upcoming_days": found.upcoming_days,
        "finalize_delay": found.finalize_delay,
    }


def get_billing_settings(request: Request) -> Obj:
    return show_billing_settings(settings_of(request.account))


def set_billing_settings(request: Request) -> Obj:
    """``retry_days`` (list or ``1,3,5``; empty = no retries), ``after_retries``,
    ``upcoming_days`` (0 = no ``invoice.upcoming``), ``finalize_delay`` seconds."""
    params = request.params
    found = update_billing_settings(
        request.account,
        retry_days=(params["retry_days"] or []) if "retry_days" in params else None,
        after_retries=params.get("after_retries"),
        upcoming_days=params.get("upcoming_days"),
        finalize_delay=params.get("finalize_delay"),
    )
    return show_billing_settings(found)


def update_billing_settings(
    account: Account,
    *,
    retry_days: Any = None,
    after_retries: Any = None,
    upcoming_days: Any = None,
    finalize_delay: Any = None,
) -> BillingSettings:
    """Change what is given (numbers or their form strings); the rest stays.

    Raises:
        StripeError: 400 for a value the settings refuse (the ones before it are kept).
    """
    found = settings_of(account)
    if retry_days is not None:
        found.retry_days = _days(retry_days)
    if after_retries is not None:
        if after_retries not in AFTER_RETRIES:
            raise invalid(
                f"after_retries must be one of {', '.join(AFTER_RETRIES)}", param="after_retries"
            )
        found.after_retries = str(after_retries)
    if upcoming_days is not None:
        found.upcoming_days = as_int(upcoming_days, "upcoming_days", minimum=0)
    if finalize_delay is not None:
        found.finalize_delay = as_int(finalize_delay, "finalize_delay", minimum=0)
    return found


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("GET", "/_sandbox/billing", get_billing_settings, control=True),
    Endpoint("POST", "/_sandbox/billing", set_billing_settings, control=True),
)
