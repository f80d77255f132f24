"""Invoices as billing makes them: build, finalise, charge, retry, void.

An invoice is ``draft`` → ``open`` (finalised: numbered, customer balance
applied, a PaymentIntent made for ``charge_automatically``) → ``paid`` |
``void`` | ``uncollectible`` (→ ``paid`` | ``void``). Payment goes through the
PaymentIntent handlers (so test cards, declines, 3-D Secure and their events
behave as for any payment). A failed attempt schedules the next one from the
account's retry schedule; the invoice's subscription goes ``past_due`` and,
once retries are exhausted, ``canceled`` or ``unpaid`` (see
``_billing_settings``). Shapes follow API 2026-10-28: the subscription is at
``parent.subscription_details.subscription`` and payments at ``payments``
(always included here, as is ``confirmation_secret``).
"""

from __future__ import annotations

from typing import Any

from stripeline_sandbox._billing_settings import billing_now, settings_of
from stripeline_sandbox._errors import StripeError
from stripeline_sandbox._ids import new_id, random_part
from stripeline_sandbox._objects import apply_metadata, copy, previous_attributes
from stripeline_sandbox._payment_intents import (
    confirm_payment_intent_op,
    create_payment_intent_op,
)
from stripeline_sandbox._routes import Call
from stripeline_sandbox._state import Obj

#: Stripe does not charge less than this (USD cents); smaller amounts go to the balance.
MINIMUM_CHARGE = 50
_ADDRESS = ("city", "country", "line1", "line2", "postal_code", "state")


def new_invoice(
    call: Call,
    customer: Obj,
    *,
    subscription: Obj | None = None,
    billing_reason: str = "manual",
    collection_method: str = "charge_automatically",
    auto_advance: bool = False,
    currency: str | None = None,
    period: tuple[int, int] | None = None,
    days_until_due: int | None = None,
    description: str | None = None,
    metadata: Any = None,
) -> Obj:
    """Store a draft invoice (no ``invoice.created`` event: the caller emits it)."""
    now = billing_now(call, customer["test_clock"])
    invoice_id = new_id("in")
    start, end = period or (now, now)
    address = customer["address"] or {}
    invoice: Obj = {
        "id": invoice_id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Stripeline Sandbox",
        "account_tax_ids": None,
        "amount_due": 0,
        "amount_overpaid": 0,
        "amount_paid": 0,
        "amount_paid_off_stripe": 0,
        "amount_remaining": 0,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 0,
        "attempted": False,
        "auto_advance": auto_advance,
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "provider": None,
            "status": None,
        },
        "automatically_finalizes_at": None,
        "billing_reason": billing_reason,
        "collection_method": collection_method,
        "confirmation_secret": None,
        "created": now,
        "currency": currency or (subscription or {}).get("currency") or "usd",
        "custom_fields": None,
        "customer": customer["id"],
        "customer_account": None,
        "customer_address": {name: address.get(name) for name in _ADDRESS},
        "customer_email": customer["email"],
        "customer_name": customer["name"],
        "customer_phone": customer["phone"],
        "customer_shipping": copy(customer["shipping"]),
        "customer_tax_exempt": customer["tax_exempt"],
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": description,
        "discounts": [],
        "due_date": now + days_until_due * 86400 if days_until_due is not None else None,
        "effective_at": None,
        "ending_balance": None,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": {
            "object": "list",
            "data": [],
            "has_more": False,
            "url": f"/v1/invoices/{invoice_id}/lines",
        },
        "livemode": False,
        "metadata": apply_metadata({}, metadata),
        "next_payment_attempt": None,
        "number": None,
        "on_behalf_of": None,
        "parent": (
            {
                "quote_details": None,
                "subscription_details": {
                    "metadata": copy(subscription["metadata"]),
                    "subscription": subscription["id"],
                },
                "type": "subscription_details",
            }
            if subscription
            else None
        ),
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "payments": {
            "object": "list",
            "data": [],
            "has_more": False,
            "url": f"/v1/invoice_payments?invoice={invoice_id}",
        },
        "period_end": end,
        "period_start": start,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": "draft",
        "status_transitions": {
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        "subtotal": 0,
        "subtotal_excluding_tax": 0,
        "test_clock": customer["test_clock"],
        "total": 0,
        "total_discount_amounts": [],
        "total_excluding_tax": 0,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": None,
    }
    if auto_advance:
        invoice["automatically_finalizes_at"] = now + settings_of(call.account).finalize_delay
    call.account.add(invoice)
    return invoice


def subscription_of(call: Call, invoice: Obj) -> Obj | None:
    parent = invoice.get("parent") or {}
    details = parent.get("subscription_details") or {}
    sub_id = details.get("subscription")
    return call.account.find("subscription", sub_id) if sub_id else None


def new_line(
    invoice: Obj,
    *,
    amount: int,
    description: str,
    period: tuple[int, int],
    quantity: int | None,
    price: Obj | None,
    subscription_id: str | None = None,
    subscription_item_id: str | None = None,
    invoice_item_id: str | None = None,
    proration: bool = False,
    metadata: Any = None,
) -> Obj:
    """Append a line to ``invoice`` and recompute its totals."""
    if subscription_item_id:
        parent: Obj = {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": invoice_item_id,
                "proration": proration,
                "proration_details": {"credited_items": None},
                "subscription": subscription_id,
                "subscription_item": subscription_item_id,
            },
            "type": "subscription_item_details",
        }
    else:
        parent = {
            "invoice_item_details": {
                "invoice_item": invoice_item_id,
                "proration": proration,
                "proration_details": {"credited_items": None},
                "subscription": subscription_id,
            },
            "subscription_item_details": None,
            "type": "invoice_item_details",
        }
    line: Obj = {
        "id": new_id("il"),
        "object": "line_item",
        "amount": amount,
        "currency": invoice["currency"],
        "description": description,
        "discount_amounts": [],
        "discountable": not proration,
        "discounts": [],
        "invoice": invoice["id"],
        "livemode": False,
        "metadata": copy(metadata or {}),
        "parent": parent,
        "period": {"start": period[0], "end": period[1]},
        "pretax_credit_amounts": [],
        "pricing": (
            {
                "price_details": {"price": price["id"], "product": price["product"]},
                "type": "price_details",
                "unit_amount_decimal": price["unit_amount_decimal"],
            }
            if price
            else None
        ),
        "quantity": quantity,
        "quantity_decimal": str(quantity) if quantity is not None else None,
        "subscription": subscription_id,
        "subtotal": amount,
        "taxes": [],
    }
    invoice["lines"]["data"].append(line)
    recompute(invoice)
    return line


def recompute(invoice: Obj) -> None:
    subtotal = sum(int(line["amount"]) for line in invoice["lines"]["data"])
    discount = sum(int(d["amount"]) for d in invoice.get("total_discount_amounts") or [])
    total = subtotal - discount
    invoice["subtotal"] = invoice["subtotal_excluding_tax"] = subtotal
    invoice["total"] = invoice["total_excluding_tax"] = total
    if invoice["status"] == "draft":
        invoice["amount_due"] = max(0, total)
        invoice["amount_remaining"] = max(0, total)


def include_pending_items(call: Call, invoice: Obj, subscription_id: str | None) -> None:
    """Move the customer's pending invoice items (of ``subscription_id``) onto ``invoice``."""
    for item in reversed(call.account.all("invoiceitem")):
        if item.get("deleted") or item["invoice"] is not None:
            continue
        if item["customer"] != invoice["customer"]:
            continue
        item_sub = ((item.get("parent") or {}).get("subscription_details") or {}).get(
            "subscription"
        )
        if item_sub != subscription_id:
            continue
        add_item_line(call, invoice, item)


def add_item_line(call: Call, invoice: Obj, item: Obj) -> Obj:
    item["invoice"] = invoice["id"]
    price_id = ((item.get("pricing") or {}).get("price_details") or {}).get("price")
    price = call.account.find("price", price_id) if price_id else None
    hidden = call.account.hidden(item["id"])
    sub_id = ((item.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    return new_line(
        invoice,
        amount=int(item["amount"]),
        description=str(item["description"] or ""),
        period=(int(item["period"]["start"]), int(item["period"]["end"])),
        quantity=item["quantity"],
        price=price,
        subscription_id=sub_id,
        subscription_item_id=hidden.get("subscription_item"),
        invoice_item_id=item["id"],
        proration=bool(item["proration"]),
        metadata=item["metadata"],
    )


def _set_status(call: Call, subscription: Obj, status: str) -> None:
    if subscription["status"] == status:
        return
    before = copy(subscription)
    subscription["status"] = status
    call.emit(
        "customer.subscription.updated", subscription, previous_attributes(before, subscription)
    )


def end_subscription(call: Call, subscription: Obj, reason: str | None) -> None:
    """Cancel now: ``canceled``, ``customer.subscription.deleted``."""
    now = billing_now(call, subscription["test_clock"])
    subscription["status"] = "canceled"
    subscription["canceled_at"] = subscription["canceled_at"] or now
    subscription["ended_at"] = now
    subscription["cancel_at_period_end"] = False
    if reason:
        subscription["cancellation_details"]["reason"] = reason
    call.emit("customer.subscription.deleted", subscription)


def finalize(call: Call, invoice: Obj) -> None:
    """``draft`` → ``open`` (or ``paid`` at once when nothing is due)."""
    account = call.account
    customer = account.objects[invoice["customer"]]
    now = billing_now(call, invoice["test_clock"])
    balance = int(customer["balance"])
    settled = int(invoice["total"]) + balance
    due = max(0, settled)
    ending = min(0, settled)
    if 0 < due < MINIMUM_CHARGE:
        # Too small to charge: carried to the customer's balance, as Stripe does.
        due, ending = 0, due
    invoice["starting_balance"] = balance
    invoice["ending_balance"] = ending
    invoice["amount_due"] = due
    invoice["amount_remaining"] = due
    if ending != balance:
        before = copy(customer)
        customer["balance"] = ending
        call.emit("customer.updated", customer, previous_attributes(before, customer))
    sequence = int(customer["next_invoice_sequence"])
    customer["next_invoice_sequence"] = sequence + 1
    invoice["number"] = f"{customer['invoice_prefix']}-{sequence:04d}"
    invoice["status"] = "open"
    invoice["automatically_finalizes_at"] = None
    invoice["status_transitions"]["finalized_at"] = now
    invoice["effective_at"] = now
    secret = random_part(24)
    invoice["hosted_invoice_url"] = f"https://invoice.stripe.com/i/acct_sandbox/test_{secret}"
    invoice["invoice_pdf"] = f"https://pay.stripe.com/invoice/acct_sandbox/test_{secret}/pdf"
    if invoice["collection_method"] == "send_invoice" and invoice["due_date"] is None:
        invoice["due_date"] = now + 30 * 86400
    if due > 0 and invoice["collection_method"] == "charge_automatically":
        _new_payment(call, invoice, customer)
    call.emit("invoice.finalized", invoice)
    if due == 0:
        mark_paid(call, invoice)


def _new_payment(call: Call, invoice: Obj, customer: Obj) -> None:
    params: dict[str, Any] = {
        "amount": invoice["amount_due"],
        "currency": invoice["currency"],
        "customer": customer["id"],
        "description": _payment_description(invoice),
    }
    payment_intent = create_payment_intent_op(call, params)
    now = billing_now(call, invoice["test_clock"])
    call.account.hidden(invoice["id"])["payment_intent"] = payment_intent["id"]
    call.account.hidden(payment_intent["id"])["invoice"] = invoice["id"]
    invoice["confirmation_secret"] = {
        "client_secret": payment_intent["client_secret"],
        "type": "payment_intent",
    }
    invoice["payments"]["data"].append(
        {
            "id": new_id("inpay"),
            "object": "invoice_payment",
            "amount_paid": None,
            "amount_requested": invoice["amount_due"],
            "created": now,
            "currency": invoice["currency"],
            "invoice": invoice["id"],
            "is_default": True,
            "livemode": False,
            "payment": {"payment_intent": payment_intent["id"], "type": "payment_intent"},
            "status": "open",
            "status_transitions": {"canceled_at": None, "paid_at": None},
        }
    )


def _payment_description(invoice: Obj) -> str:
    return {
        "subscription_create": "Subscription creation",
        "subscription_cycle": "Subscription update",
        "subscription_update": "Subscription update",
    }.get(str(invoice["billing_reason"]), "Payment for Invoice")


def payment_intent_of(call: Call, invoice: Obj) -> Obj | None:
    pi_id = call.account.hidden(invoice["id"]).get("payment_intent")
    return call.account.find("payment_intent", pi_id) if pi_id else None


def default_payment_method(call: Call, invoice: Obj) -> str | None:
    subscription = subscription_of(call, invoice)
    customer = call.account.objects[invoice["customer"]]
    for candidate in (
        invoice["default_payment_method"],
        subscription["default_payment_method"] if subscription else None,
        customer["invoice_settings"]["default_payment_method"],
    ):
        if candidate:
            return str(candidate)
    return None


def attempt_payment(
    call: Call,
    invoice: Obj,
    *,
    payment_method: str | None = None,
    off_session: bool = True,
) -> StripeError | None:
    """Charge an open invoice; on failure schedule the next try and return the error."""
    payment_intent = payment_intent_of(call, invoice)
    if payment_intent is None:
        customer = call.account.objects[invoice["customer"]]
        _new_payment(call, invoice, customer)
        payment_intent = payment_intent_of(call, invoice)
        assert payment_intent is not None  # noqa: S101 - just made
    if payment_intent["status"] == "succeeded":
        mark_paid(call, invoice)
        return None
    reference = payment_method or default_payment_method(call, invoice)
    invoice["attempted"] = True
    invoice["attempt_count"] = int(invoice["attempt_count"]) + 1
    error: StripeError | None = None
    if reference is None:
        error = StripeError(
            400,
            "This customer has no attached payment source or default payment method.",
            code="invoice_no_payment_method_types",
        )
    else:
        params: dict[str, Any] = {"payment_method": reference}
        if off_session:
            params["off_session"] = "true"
        try:
            confirm_payment_intent_op(call, payment_intent["id"], params)
        except StripeError as exc:
            error = exc
    if payment_intent["status"] == "succeeded":
        if invoice["status"] != "paid":  # the PaymentIntent's outcome hook may have
            mark_paid(call, invoice)
        return None
    if payment_intent["status"] == "processing":
        return None  # a bank debit: the invoice is paid (or fails) when it settles
    if payment_intent["status"] == "requires_action":
        call.emit("invoice.payment_action_required", invoice)
        error = StripeError(
            402,
            "This payment requires additional user action before it can be completed.",
            code="invoice_payment_intent_requires_action",
        )
    _failed(call, invoice)
    return error


def _failed(call: Call, invoice: Obj) -> None:
    now = billing_now(call, invoice["test_clock"])
    schedule = settings_of(call.account).retry_days
    subscription = subscription_of(call, invoice)
    first_invoice = invoice["billing_reason"] == "subscription_create"
    index = int(invoice["attempt_count"]) - 1
    retries_left = index < len(schedule) and not first_invoice
    invoice["next_payment_attempt"] = now + schedule[index] * 86400 if retries_left else None
    call.emit("invoice.payment_failed", invoice)
    if subscription is None or subscription["status"] in ("canceled", "incomplete_expired"):
        return
    if first_invoice:
        _set_status(call, subscription, "incomplete")
        return
    if subscription["status"] in ("active", "trialing"):
        _set_status(call, subscription, "past_due")
    if not retries_left and invoice["status"] == "open":
        after = settings_of(call.account).after_retries
        if after == "cancel":
            end_subscription(call, subscription, "payment_failed")
        elif after == "unpaid":
            _set_status(call, subscription, "unpaid")


def mark_paid(call: Call, invoice: Obj, *, out_of_band: bool = False) -> None:
    now = billing_now(call, invoice["test_clock"])
    invoice["status"] = "paid"
    invoice["amount_paid"] = int(invoice["amount_due"])
    invoice["amount_remaining"] = 0
    invoice["next_payment_attempt"] = None
    invoice["status_transitions"]["paid_at"] = now
    if out_of_band:
        invoice["amount_paid_off_stripe"] = invoice["amount_due"]
    for payment in invoice["payments"]["data"]:
        if payment["status"] == "open":
            payment["status"] = "canceled" if out_of_band else "paid"
            if out_of_band:
                payment["status_transitions"]["canceled_at"] = now
            else:
                payment["amount_paid"] = payment["amount_requested"]
                payment["status_transitions"]["paid_at"] = now
    call.emit("invoice.paid", invoice)
    call.emit("invoice.payment_succeeded", invoice)
    subscription = subscription_of(call, invoice)
    if subscription is None or subscription["status"] not in ("incomplete", "past_due", "unpaid"):
        return
    still_open = any(
        other["status"] == "open" and other["id"] != invoice["id"]
        for other in call.account.all("invoice")
        if (subscription_of(call, other) or {}).get("id") == subscription["id"]
    )
    if not still_open:
        trial_end = subscription["trial_end"]
        trialing = trial_end is not None and trial_end > now
        _set_status(call, subscription, "trialing" if trialing else "active")


def void(call: Call, invoice: Obj) -> None:
    now = billing_now(call, invoice["test_clock"])
    invoice["status"] = "void"
    invoice["next_payment_attempt"] = None
    invoice["status_transitions"]["voided_at"] = now
    payment_intent = payment_intent_of(call, invoice)
    if payment_intent is not None and payment_intent["status"] != "succeeded":
        payment_intent["status"] = "canceled"
        payment_intent["canceled_at"] = call.now()
        payment_intent["cancellation_reason"] = "void_invoice"
        call.emit("payment_intent.canceled", payment_intent)
    for payment in invoice["payments"]["data"]:
        if payment["status"] == "open":
            payment["status"] = "canceled"
            payment["status_transitions"]["canceled_at"] = now
    call.emit("invoice.voided", invoice)


def mark_uncollectible(call: Call, invoice: Obj) -> None:
    invoice["status"] = "uncollectible"
    invoice["next_payment_attempt"] = None
    invoice["status_transitions"]["marked_uncollectible_at"] = billing_now(
        call, invoice["test_clock"]
    )
    call.emit("invoice.marked_uncollectible", invoice)


def payment_outcome(call: Call, payment_intent: Obj) -> None:
    """An invoice's PaymentIntent succeeded (confirmed directly by a client, after
    3-D Secure, or a bank debit settled): the invoice is paid at once; a bank
    debit that failed counts as a failed payment attempt."""
    invoice_id = call.account.hidden(payment_intent["id"]).get("invoice")
    invoice = call.account.find("invoice", invoice_id) if invoice_id else None
    if invoice is None or invoice["status"] not in ("open", "uncollectible"):
        return
    if payment_intent["status"] == "succeeded":
        mark_paid(call, invoice)
    elif payment_intent["status"] == "requires_payment_method":
        _failed(call, invoice)


def reconcile(call: Call) -> None:
    """Mark open invoices paid whose PaymentIntent was confirmed directly (client side)."""
    for invoice in call.account.all("invoice"):
        if invoice["status"] in ("open", "uncollectible"):
            payment_intent = payment_intent_of(call, invoice)
            if payment_intent is not None and payment_intent["status"] == "succeeded":
                mark_paid(call, invoice)
