"""The subscription cycle and the billing scheduler.

Periods: a subscription's billing periods are counted from its
``billing_cycle_anchor`` (months keep the anchor's day, clamped to the
month's end, as Stripe does); every item carries ``current_period_start/end``
(API basil and later). Prorations are by the exact seconds left in the
period, rounded half up to the cent.

Due work (trial ending, ``trial_will_end``, ``invoice.upcoming``, renewals,
period-end cancels, finalising drafts, payment retries, ``incomplete``
expiry, ``invoice.overdue`` of a sent invoice past its due date) is not a queue: ``due_work`` derives it from the objects' state, and
``run_until`` performs it in time order, moving billing time to each
moment. Test clocks run it on ``/advance``; subscriptions of customers
without a test clock follow the sandbox clock and ``settle`` runs their due
work at the start of every billing call.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from stripeline_sandbox._billing_settings import (
    INCOMPLETE_EXPIRY,
    TRIAL_WILL_END_NOTICE,
    billing_now,
    set_cursor,
    settings_of,
)
from stripeline_sandbox._coupons import apply_discounts
from stripeline_sandbox._ids import new_id
from stripeline_sandbox._invoicing import (
    attempt_payment,
    end_subscription,
    finalize,
    include_pending_items,
    mark_uncollectible,
    new_invoice,
    new_line,
    reconcile,
    void,
)
from stripeline_sandbox._meters import metered, usage_of
from stripeline_sandbox._objects import apply_metadata, copy, previous_attributes
from stripeline_sandbox._prices import plan_of
from stripeline_sandbox._routes import Call
from stripeline_sandbox._state import Obj

#: Stops a runaway schedule (a bug) instead of hanging the request.
MAX_STEPS = 10_000
_LIVE = ("trialing", "active", "past_due", "unpaid")

Job = tuple[int, int, Callable[[], None]]


# -- periods -----------------------------------------------------------------


def add_interval(anchor: int, interval: str, count: int) -> int:
    """``anchor`` moved ``count`` intervals on (months keep the day, clamped)."""
    if interval == "day":
        return anchor + count * 86400
    if interval == "week":
        return anchor + count * 7 * 86400
    months = count * (12 if interval == "year" else 1)
    moment = datetime.fromtimestamp(anchor, UTC)
    years, month = divmod(moment.month - 1 + months, 12)
    year = moment.year + years
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return int(moment.replace(year=year, month=month + 1, day=day).timestamp())


def boundary(subscription: Obj, cycle: int, hidden: dict[str, Any]) -> int:
    recurring = subscription["items"]["data"][0]["price"]["recurring"]
    return add_interval(
        int(hidden["anchor"]), recurring["interval"], int(recurring["interval_count"]) * cycle
    )


def set_period(subscription: Obj, start: int, end: int) -> None:
    for item in subscription["items"]["data"]:
        item["current_period_start"] = start
        item["current_period_end"] = end


def period_of(subscription: Obj) -> tuple[int, int]:
    item = subscription["items"]["data"][0]
    return int(item["current_period_start"]), int(item["current_period_end"])


def reset_anchor(call: Call, subscription: Obj, anchor: int) -> None:
    """Start a new cycle at ``anchor`` (trial end, ``billing_cycle_anchor=now``, resume)."""
    hidden = call.account.hidden(subscription["id"])
    hidden["anchor"], hidden["cycle"] = anchor, 0
    subscription["billing_cycle_anchor"] = anchor
    set_period(subscription, anchor, boundary(subscription, 1, hidden))


def product_name(call: Call, price: Obj) -> str:
    product = call.account.objects.get(price["product"]) or {}
    return str(product.get("name") or price["product"])


# -- invoices of a subscription ---------------------------------------------


def cycle_invoice(
    call: Call, subscription: Obj, billing_reason: str, *, include_items: bool = True
) -> Obj:
    """A draft invoice for the current period of every item (plus pending items)."""
    customer = call.account.objects[subscription["customer"]]
    start, end = period_of(subscription)
    invoice = new_invoice(
        call,
        customer,
        subscription=subscription,
        billing_reason=billing_reason,
        collection_method=subscription["collection_method"],
        period=(start, end) if billing_reason == "subscription_create" else (start, start),
        days_until_due=subscription["days_until_due"],
    )
    if billing_reason != "subscription_create":
        invoice["period_start"], invoice["period_end"] = _previous_period(call, subscription)
    include_pending_items(call, invoice, subscription["id"])
    if include_items:
        trialing = subscription["status"] == "trialing"
        for item in subscription["items"]["data"]:
            price, quantity = item["price"], int(item["quantity"])
            name = product_name(call, price)
            if metered(price):
                _usage_line(call, subscription, invoice, item, trialing or billing_reason)
                continue
            new_line(
                invoice,
                amount=0 if trialing else int(price["unit_amount"]) * quantity,
                description=(f"Trial period for {name}" if trialing else f"{quantity} × {name}"),
                period=(start, end),
                quantity=quantity,
                price=price,
                subscription_id=subscription["id"],
                subscription_item_id=item["id"],
            )
    apply_discounts(call, invoice, subscription)
    subscription["latest_invoice"] = invoice["id"]
    call.emit("invoice.created", invoice)
    return invoice


def _usage_line(
    call: Call, subscription: Obj, invoice: Obj, item: Obj, trialing_or_reason: bool | str
) -> None:
    """A metered item's line: the usage of the period that ended, in arrears
    (nothing on a subscription's first invoice, nor for trial time)."""
    price, name = item["price"], product_name(call, item["price"])
    start, end = int(invoice["period_start"]), int(invoice["period_end"])
    used = 0
    if trialing_or_reason not in (True, "subscription_create"):
        trial_end = subscription["trial_end"]
        since = max(start, int(trial_end)) if trial_end else start
        used = usage_of(call, price, subscription["customer"], since, end)
    new_line(
        invoice,
        amount=int(price["unit_amount"]) * used,
        description=f"{used} × {name} (usage)",
        period=(start, end),
        quantity=used,
        price=price,
        subscription_id=subscription["id"],
        subscription_item_id=item["id"],
    )


def _previous_period(call: Call, subscription: Obj) -> tuple[int, int]:
    hidden = call.account.hidden(subscription["id"])
    end = period_of(subscription)[0]
    start = int(hidden.get("previous_start", end))
    return start, end


def collect(call: Call, invoice: Obj, *, off_session: bool = True) -> None:
    """Finalise ``invoice`` now and charge it (automatic collection)."""
    invoice["auto_advance"] = True
    finalize(call, invoice)
    if (
        invoice["status"] == "open"
        and invoice["collection_method"] == "charge_automatically"
        and int(invoice["amount_due"]) > 0
    ):
        attempt_payment(call, invoice, off_session=off_session)


def _schedule_collection(call: Call, subscription: Obj, invoice: Obj) -> None:
    """What happens to a renewal draft: collection paused, unpaid, or finalised later."""
    pause = subscription["pause_collection"]
    if pause:
        behavior = pause["behavior"]
        if behavior == "keep_as_draft":
            return
        finalize(call, invoice)
        if invoice["status"] == "open":
            if behavior == "void":
                void(call, invoice)
            else:
                mark_uncollectible(call, invoice)
        return
    if subscription["status"] == "unpaid":
        return
    delay = settings_of(call.account).finalize_delay
    if delay == 0:
        collect(call, invoice)
        return
    invoice["auto_advance"] = True
    invoice["automatically_finalizes_at"] = int(invoice["created"]) + delay


# -- the cycle -----------------------------------------------------------------


def renew(call: Call, subscription: Obj) -> None:
    """The period ended: start the next one and invoice it."""
    hidden = call.account.hidden(subscription["id"])
    before = copy(subscription)
    hidden["previous_start"] = period_of(subscription)[0]
    hidden["cycle"] = int(hidden["cycle"]) + 1
    cycle = int(hidden["cycle"])
    start, end = boundary(subscription, cycle, hidden), boundary(subscription, cycle + 1, hidden)
    set_period(subscription, start, end)
    invoice = cycle_invoice(call, subscription, "subscription_cycle")
    call.emit(
        "customer.subscription.updated", subscription, previous_attributes(before, subscription)
    )
    _schedule_collection(call, subscription, invoice)


def end_trial(call: Call, subscription: Obj, moment: int) -> None:
    """The trial is over: charge the first period, or pause/cancel without a payment method."""
    customer = call.account.objects[subscription["customer"]]
    has_method = bool(
        subscription["default_payment_method"]
        or customer["invoice_settings"]["default_payment_method"]
    )
    missing = subscription["trial_settings"]["end_behavior"]["missing_payment_method"]
    before = copy(subscription)
    subscription["trial_end"] = moment
    if not has_method and missing == "cancel":
        end_subscription(call, subscription, "cancellation_requested")
        return
    if not has_method and missing == "pause":
        subscription["status"] = "paused"
        call.emit(
            "customer.subscription.updated",
            subscription,
            previous_attributes(before, subscription),
        )
        call.emit("customer.subscription.paused", subscription)
        return
    call.account.hidden(subscription["id"])["previous_start"] = period_of(subscription)[0]
    subscription["status"] = "active"
    reset_anchor(call, subscription, moment)
    invoice = cycle_invoice(call, subscription, "subscription_cycle")
    call.emit(
        "customer.subscription.updated", subscription, previous_attributes(before, subscription)
    )
    _schedule_collection(call, subscription, invoice)


def _upcoming(call: Call, subscription: Obj) -> None:
    start, end = period_of(subscription)
    call.account.hidden(subscription["id"])["upcoming_for"] = end
    hidden = call.account.hidden(subscription["id"])
    cycle = int(hidden["cycle"])
    next_end = boundary(subscription, cycle + 2, hidden)
    lines = [
        {
            "object": "line_item",
            "amount": int(item["price"]["unit_amount"])
            * (
                usage_of(call, item["price"], subscription["customer"], start, end)
                if metered(item["price"])
                else int(item["quantity"])
            ),
            "currency": subscription["currency"],
            "description": f"{item['quantity']} × {product_name(call, item['price'])}",
            "period": {"start": end, "end": next_end},
            "quantity": item["quantity"],
            "subscription": subscription["id"],
        }
        for item in subscription["items"]["data"]
    ]
    total = sum(int(line["amount"]) for line in lines)
    preview: Obj = {
        "object": "invoice",
        "amount_due": total,
        "billing_reason": "upcoming",
        "collection_method": subscription["collection_method"],
        "created": billing_now(call, subscription["test_clock"]),
        "currency": subscription["currency"],
        "customer": subscription["customer"],
        "lines": {"object": "list", "data": lines, "has_more": False, "url": "/v1/invoices"},
        "livemode": False,
        "next_payment_attempt": end,
        "parent": {
            "quote_details": None,
            "subscription_details": {
                "metadata": copy(subscription["metadata"]),
                "subscription": subscription["id"],
            },
            "type": "subscription_details",
        },
        "period_end": end,
        "period_start": start,
        "status": "draft",
        "subtotal": total,
        "test_clock": subscription["test_clock"],
        "total": total,
    }
    call.emit("invoice.upcoming", preview)


def _trial_will_end(call: Call, subscription: Obj) -> None:
    call.account.hidden(subscription["id"])["trial_will_end_sent"] = True
    call.emit("customer.subscription.trial_will_end", subscription)


def _expire(call: Call, subscription: Obj) -> None:
    before = copy(subscription)
    subscription["status"] = "incomplete_expired"
    subscription["ended_at"] = billing_now(call, subscription["test_clock"])
    invoice = call.account.objects.get(subscription["latest_invoice"] or "")
    if invoice is not None and invoice["status"] == "open":
        void(call, invoice)
    call.emit(
        "customer.subscription.updated", subscription, previous_attributes(before, subscription)
    )


def _unpause_collection(call: Call, subscription: Obj) -> None:
    before = copy(subscription)
    subscription["pause_collection"] = None
    call.emit(
        "customer.subscription.updated", subscription, previous_attributes(before, subscription)
    )


def _cancel_at(call: Call, subscription: Obj) -> None:
    reason = subscription["cancellation_details"]["reason"] or "cancellation_requested"
    end_subscription(call, subscription, reason)


# -- the scheduler -------------------------------------------------------------


def _subscription_work(call: Call, subscription: Obj) -> list[Job]:
    hidden = call.account.hidden(subscription["id"])
    status = subscription["status"]
    jobs: list[Job] = []
    if status == "incomplete":
        expiry = int(subscription["created"]) + INCOMPLETE_EXPIRY
        jobs.append((expiry, 5, lambda: _expire(call, subscription)))
        return jobs
    if status not in _LIVE:
        return jobs
    start, end = period_of(subscription)
    upcoming_days = settings_of(call.account).upcoming_days
    if upcoming_days and hidden.get("upcoming_for") != end and subscription["cancel_at"] is None:
        notice = end - upcoming_days * 86400
        if notice > start:
            jobs.append((notice, 1, lambda: _upcoming(call, subscription)))
    pause = subscription["pause_collection"]
    if pause and pause.get("resumes_at"):
        jobs.append((int(pause["resumes_at"]), 2, lambda: _unpause_collection(call, subscription)))
    cancel_at = subscription["cancel_at"]
    if cancel_at is not None and int(cancel_at) <= end:
        jobs.append((int(cancel_at), 2, lambda: _cancel_at(call, subscription)))
        return jobs
    if status == "trialing":
        trial_end = int(subscription["trial_end"])
        if not hidden.get("trial_will_end_sent"):
            notice = max(int(subscription["created"]), trial_end - TRIAL_WILL_END_NOTICE)
            jobs.append((notice, 0, lambda: _trial_will_end(call, subscription)))
        jobs.append((trial_end, 3, lambda: end_trial(call, subscription, trial_end)))
        return jobs
    jobs.append((end, 3, lambda: renew(call, subscription)))
    return jobs


def _invoice_work(call: Call, invoice: Obj) -> list[Job]:
    if invoice["status"] == "draft" and invoice["auto_advance"]:
        moment = invoice["automatically_finalizes_at"]
        if moment is not None:
            return [(int(moment), 4, lambda: _auto_finalize(call, invoice))]
    if (
        invoice["status"] == "open"
        and invoice["collection_method"] == "charge_automatically"
        and invoice["next_payment_attempt"] is not None
        and invoice["auto_advance"]
    ):
        return [(int(invoice["next_payment_attempt"]), 4, lambda: _retry(call, invoice))]
    if (
        invoice["status"] == "open"
        and invoice["due_date"] is not None
        and invoice["collection_method"] == "send_invoice"
        and not call.account.hidden(invoice["id"]).get("overdue_sent")
    ):
        return [(int(invoice["due_date"]), 4, lambda: _overdue(call, invoice))]
    return []


def _overdue(call: Call, invoice: Obj) -> None:
    """A sent invoice not paid by its due date: ``invoice.overdue``, once."""
    call.account.hidden(invoice["id"])["overdue_sent"] = True
    call.emit("invoice.overdue", invoice)


def _retry(call: Call, invoice: Obj) -> None:
    attempt_payment(call, invoice)


def _auto_finalize(call: Call, invoice: Obj) -> None:
    invoice["automatically_finalizes_at"] = None
    collect(call, invoice)


def due_work(call: Call, clock_id: str | None) -> list[Job]:
    """Every piece of work the objects of one clock (None: the sandbox clock) will do."""
    jobs: list[Job] = []
    for subscription in call.account.all("subscription"):
        if subscription["test_clock"] == clock_id:
            jobs.extend(_subscription_work(call, subscription))
    for invoice in call.account.all("invoice"):
        if invoice["test_clock"] == clock_id:
            jobs.extend(_invoice_work(call, invoice))
    return jobs


def run_until(
    call: Call, clock_id: str | None, target: int, on_step: Callable[[int], None]
) -> None:
    """Do all due work up to ``target`` in time order; ``on_step`` moves billing time.

    Raises:
        RuntimeError: the schedule never settles (a sandbox bug).
    """
    for _ in range(MAX_STEPS):
        jobs = [job for job in due_work(call, clock_id) if job[0] <= target]
        if not jobs:
            return
        moment, _, action = min(jobs, key=lambda job: (job[0], job[1]))
        on_step(moment)
        first = len(call.events)
        reconcile(call)
        action()
        for event in call.events[first:]:
            # Stripe's automatic changes carry no request.
            event["request"] = {"id": None, "idempotency_key": None}
    raise RuntimeError("billing schedule did not settle")


def settle(call: Call) -> None:
    """Catch sandbox-clock billing up with the sandbox clock; pick up paid invoices."""
    account = call.account
    try:
        run_until(call, None, call.now(), lambda moment: set_cursor(account, moment))
    finally:
        set_cursor(account, None)
    reconcile(call)


def new_item(call: Call, subscription: Obj, price: Obj, quantity: int, metadata: Any) -> Obj:
    """Store a subscription item for ``price`` (its period is set by the caller)."""
    item: Obj = {
        "id": new_id("si"),
        "object": "subscription_item",
        "billing_thresholds": None,
        "created": billing_now(call, subscription["test_clock"]),
        "current_period_end": 0,
        "current_period_start": 0,
        "discounts": [],
        "metadata": apply_metadata({}, metadata),
        "plan": plan_of(price),
        "price": copy(price),
        "quantity": quantity,
        "subscription": subscription["id"],
        "tax_rates": [],
    }
    call.account.add(item)
    return item
