"""Refunds: partial and full, over-refunds refused, ``pm_card_refundFail`` failing."""

from __future__ import annotations

from stripeline_sandbox._balance_transactions import record
from stripeline_sandbox._cards import TestCard
from stripeline_sandbox._errors import invalid
from stripeline_sandbox._ids import new_id
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._objects import apply_metadata, copy, previous_attributes
from stripeline_sandbox._routes import Call, Endpoint, Request, as_int, optional_str
from stripeline_sandbox._state import Obj

#: Seconds of sandbox time a ``pm_card_pendingRefund`` refund stays ``pending``.
REFUND_PENDING_SECONDS = 3600
_PENDING = "__pending_refunds__"

_REASONS = (None, "duplicate", "fraudulent", "requested_by_customer")


def _money(amount: int) -> str:
    return f"${amount / 100:.2f}"


def create_refund(request: Request) -> Obj:
    params = request.params
    if params.get("charge"):
        charge = request.get("charge", str(params["charge"]), param="charge")
    elif params.get("payment_intent"):
        payment_intent = request.get(
            "payment_intent", str(params["payment_intent"]), param="payment_intent"
        )
        if payment_intent["status"] != "succeeded" or not payment_intent["latest_charge"]:
            raise invalid(
                "This PaymentIntent does not have a successful charge to refund.",
                param="payment_intent",
            )
        charge = request.get("charge", payment_intent["latest_charge"])
    else:
        raise invalid(
            "One of the following params should be provided for this request: payment_intent or charge."
        )
    if not charge["captured"]:
        raise invalid(
            "This charge has not been captured; cancel its PaymentIntent instead.", param="charge"
        )
    if charge["disputed"]:
        dispute = next(
            (d for d in request.account.all("dispute") if d["charge"] == charge["id"]), None
        )
        if dispute is not None and not dispute["is_charge_refundable"]:
            raise invalid(
                f"Charge {charge['id']} has been charged back; cannot issue a refund.",
                code="charge_disputed",
            )
    remaining = (
        int(charge["amount_captured"])
        - int(charge["amount_refunded"])
        + (int(charge["amount"]) - int(charge["amount_captured"]))
    )
    if remaining <= 0:
        raise invalid(
            f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded"
        )
    amount = as_int(params.get("amount", remaining), "amount", minimum=1)
    if amount > remaining:
        raise invalid(
            f"Refund amount ({_money(amount)}) is greater than unrefunded amount on charge ({_money(remaining)})",
            param="amount",
            code="amount_too_large",
        )
    reason = optional_str(params.get("reason"))
    if reason not in _REASONS:
        raise invalid(f"Invalid reason: {reason}", param="reason")
    refund: Obj = {
        "id": new_id("re"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": None,
        "charge": charge["id"],
        "created": request.now(),
        "currency": charge["currency"],
        "customer": charge["customer"],
        "customer_account": None,
        "destination_details": {
            "card": {
                "reference_status": "pending",
                "reference_type": "acquirer_reference_number",
                "type": "refund",
            },
            "type": "card",
        },
        "metadata": apply_metadata({}, params.get("metadata")),
        "payment_intent": charge["payment_intent"],
        "payment_method": charge["payment_method"],
        "reason": reason,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "succeeded",
        "transfer_reversal": None,
    }
    refund["balance_transaction"] = record(
        request,
        amount=-amount,
        currency=str(charge["currency"]),
        type="refund",
        reporting_category="refund",
        source=str(refund["id"]),
        description="REFUND FOR CHARGE"
        + (f" ({charge['description']})" if charge["description"] else ""),
    )
    card = request.account.hidden(charge["id"]).get("card")
    fails = isinstance(card, TestCard) and card.refund_fails
    pending = isinstance(card, TestCard) and card.refund_pending
    if fails or pending:
        refund["status"] = "pending"
    if pending:
        # pm_card_pendingRefund: pending, then succeeded some time later.
        due = request.account.hidden(_PENDING)
        due[refund["id"]] = int(refund["created"]) + REFUND_PENDING_SECONDS
    request.account.add(refund)
    before = copy(charge)
    charge["amount_refunded"] = int(charge["amount_refunded"]) + amount
    charge["refunded"] = charge["amount_refunded"] >= int(charge["amount"])
    charge["refunds"]["data"].insert(0, refund)
    request.emit("refund.created", refund)
    request.emit("charge.refunded", charge, previous_attributes(before, charge))
    if fails:
        # pm_card_refundFail: the refund is accepted, then the card network returns it.
        refund_before = copy(refund)
        refund["status"] = "failed"
        refund["failure_reason"] = "expired_or_canceled_card"
        refund["failure_balance_transaction"] = record(
            request,
            amount=amount,
            currency=str(charge["currency"]),
            type="refund_failure",
            reporting_category="refund_failure",
            source=str(refund["id"]),
            description="Refund failure",
        )
        charge["amount_refunded"] = int(charge["amount_refunded"]) - amount
        charge["refunded"] = False
        changed = previous_attributes(refund_before, refund)
        request.emit("refund.failed", refund, changed)
        request.emit("refund.updated", refund, changed)
        request.emit("charge.refund.updated", refund, changed)
    return refund


def settle_pending_refunds(call: Call) -> None:
    """Refunds of ``pm_card_pendingRefund`` whose time has come: ``pending`` →
    ``succeeded`` (``refund.updated``, ``charge.refund.updated``; no request)."""
    due = call.account.hidden(_PENDING)
    if not due:
        return
    now = call.now()
    for refund_id, moment in sorted(due.items(), key=lambda entry: (entry[1], entry[0])):
        if moment > now:
            continue
        due.pop(refund_id, None)
        refund = call.account.find("refund", refund_id)
        if refund is None or refund["status"] != "pending":
            continue
        before = copy(refund)
        refund["status"] = "succeeded"
        refund["destination_details"]["card"]["reference_status"] = "available"
        refund["destination_details"]["card"]["reference"] = new_id("arn")[4:]
        changed = previous_attributes(before, refund)
        first = len(call.events)
        call.emit("refund.updated", refund, changed)
        call.emit("charge.refund.updated", refund, changed)
        for event in call.events[first:]:
            event["request"] = {"id": None, "idempotency_key": None}


def retrieve_refund(request: Request) -> Obj:
    return request.get("refund", request.path_params["id"])


def update_refund(request: Request) -> Obj:
    refund = request.get("refund", request.path_params["id"])
    before = copy(refund)
    refund["metadata"] = apply_metadata(refund["metadata"], request.params.get("metadata"))
    changed = previous_attributes(before, refund)
    if changed:
        request.emit("refund.updated", refund, changed)
        request.emit("charge.refund.updated", refund, changed)
    return refund


def list_refunds(request: Request) -> Obj:
    charge = request.params.get("charge")
    payment_intent = request.params.get("payment_intent")
    return list_object(
        request,
        request.account.all("refund"),
        "/v1/refunds",
        lambda r: charge in (None, r["charge"]) and payment_intent in (None, r["payment_intent"]),
    )


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/refunds", create_refund),
    Endpoint("GET", "/v1/refunds/{id}", retrieve_refund),
    Endpoint("POST", "/v1/refunds/{id}", update_refund),
    Endpoint("GET", "/v1/refunds", list_refunds),
)
