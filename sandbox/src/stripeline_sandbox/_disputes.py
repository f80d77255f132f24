"""Disputes: opened by the dispute test cards, answered with evidence, closed won or lost.

A chargeback (``pm_card_createDispute``) opens ``needs_response`` and withdraws
the amount plus the 1500¢ fee (``charge.dispute.funds_withdrawn``); an inquiry
(``pm_card_createDisputeInquiry``) opens ``warning_needs_response``. Submitting
evidence moves it ``under_review``; ``uncategorized_text`` ``winning_evidence``
or ``losing_evidence`` closes it at once, as in Stripe's test mode, and
``POST /_sandbox/disputes/{id}/close`` with ``outcome=won|lost`` closes it on demand.

Evidence is refused once ``evidence_details.due_by`` has passed (sandbox
time), and a file field must name a ``File`` uploaded with
``purpose=dispute_evidence`` (``_files``). ``POST
/_sandbox/charges/{id}/early_fraud_warning`` raises an early fraud warning on a
charge, as the card network would (``radar.early_fraud_warning.created``).
"""

from __future__ import annotations

from stripeline_sandbox._cards import TestCard
from stripeline_sandbox._errors import invalid
from stripeline_sandbox._files import evidence_file
from stripeline_sandbox._ids import new_id
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._objects import apply_metadata, copy, previous_attributes
from stripeline_sandbox._routes import Call, Endpoint, Request, as_bool, optional_str
from stripeline_sandbox._state import Obj

DISPUTE_FEE = 1500
RESPONSE_WINDOW_SECONDS = 7 * 24 * 3600
EVIDENCE_FIELDS = (
    "access_activity_log", "billing_address", "cancellation_policy",
    "cancellation_policy_disclosure", "cancellation_rebuttal", "customer_communication",
    "customer_email_address", "customer_name", "customer_purchase_ip", "customer_signature",
    "duplicate_charge_documentation", "duplicate_charge_explanation", "duplicate_charge_id",
    "product_description", "receipt", "refund_policy", "refund_policy_disclosure",
    "refund_refusal_explanation", "service_date", "service_documentation", "shipping_address",
    "shipping_carrier", "shipping_date", "shipping_documentation", "shipping_tracking_number",
    "uncategorized_file", "uncategorized_text",
)  # fmt: skip
_OPEN = {"needs_response", "warning_needs_response"}
#: Evidence fields that take a File id.
FILE_FIELDS = (
    "cancellation_policy", "customer_communication", "customer_signature",
    "duplicate_charge_documentation", "receipt", "refund_policy", "service_documentation",
    "shipping_documentation", "uncategorized_file",
)  # fmt: skip
FRAUD_TYPES = (
    "card_never_received", "fraudulent_card_application", "made_with_counterfeit_card",
    "made_with_lost_card", "made_with_stolen_card", "misc", "unauthorized_use_of_card",
)  # fmt: skip


def _balance_transaction(call: Call, dispute: Obj, amount: int, fee: int, kind: str) -> Obj:
    """A balance transaction of the dispute (kept, so it can be retrieved too)."""
    transaction: Obj = {
        "id": new_id("txn"),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": call.now(),
        "balance_type": "payments",
        "created": call.now(),
        "currency": dispute["currency"],
        "description": f"Chargeback {kind} for {dispute['charge']}",
        "exchange_rate": None,
        "fee": fee,
        "fee_details": [
            {
                "amount": fee,
                "application": None,
                "currency": dispute["currency"],
                "description": "Dispute fee",
                "type": "stripe_fee",
            }
        ]
        if fee
        else [],
        "net": amount - fee,
        "reporting_category": "dispute" if amount < 0 else "dispute_reversal",
        "source": dispute["id"],
        "status": "available",
        "type": "adjustment",
    }
    call.account.add(copy(transaction))
    return transaction


def after_card_charge(call: Call, charge: Obj, card: TestCard) -> None:
    """What the card network does after a test card's captured charge: open its
    dispute or inquiry, or send its early fraud warning."""
    if card.dispute is not None:
        inquiry = card.dispute == "inquiry"
        open_dispute(call, charge, inquiry=inquiry, reason=None if inquiry else card.dispute)
    if card.early_fraud_warning:
        early_fraud_warning_op(call, charge, "unauthorized_use_of_card")


def open_dispute(call: Call, charge: Obj, *, inquiry: bool, reason: str | None = None) -> Obj:
    """Open a dispute on ``charge`` as the card network would (``reason``:
    ``fraudulent`` unless told, ``general`` for an inquiry)."""
    amount = int(charge["amount_captured"])
    now = call.now()
    # Due at the end of the day, a week from now (Stripe's windows vary by network).
    due_by = now + RESPONSE_WINDOW_SECONDS
    due_by += 86399 - due_by % 86400
    card = charge["payment_method_details"]["card"]
    dispute: Obj = {
        "id": new_id("du"),
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge["id"],
        "created": now,
        "currency": charge["currency"],
        "enhanced_eligibility_types": [],
        "evidence": {name: None for name in EVIDENCE_FIELDS} | {"enhanced_evidence": {}},
        "evidence_details": {
            "due_by": due_by,
            "enhanced_eligibility": {},
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": inquiry,
        "livemode": False,
        "metadata": {},
        "payment_intent": charge["payment_intent"],
        "payment_method_details": {
            "card": {
                "brand": card["brand"],
                "case_type": "inquiry" if inquiry else "chargeback",
                "network_reason_code": "10.4" if not inquiry else "F29",
                "network": card["brand"],
            },
            "type": "card",
        },
        "reason": reason or ("general" if inquiry else "fraudulent"),
        "status": "warning_needs_response" if inquiry else "needs_response",
    }
    call.account.add(dispute)
    before = copy(charge)
    charge["disputed"] = True
    call.emit("charge.dispute.created", dispute)
    call.emit("charge.updated", charge, previous_attributes(before, charge))
    if not inquiry:
        dispute["balance_transactions"].append(
            _balance_transaction(call, dispute, -amount, DISPUTE_FEE, "withdrawal")
        )
        call.emit("charge.dispute.funds_withdrawn", dispute)
    return dispute


def _inquiry(dispute: Obj) -> bool:
    return str(dispute["status"]).startswith("warning_")


def close_dispute(call: Call, dispute: Obj, outcome: str) -> None:
    """Close as ``won`` or ``lost`` (an inquiry just closes)."""
    before = copy(dispute)
    if _inquiry(dispute):
        dispute["status"] = "warning_closed"
    else:
        dispute["status"] = outcome
        if outcome == "won":
            dispute["balance_transactions"].append(
                _balance_transaction(call, dispute, int(dispute["amount"]), 0, "reversal")
            )
            call.emit("charge.dispute.funds_reinstated", dispute)
    dispute["is_charge_refundable"] = False
    call.emit("charge.dispute.closed", dispute, previous_attributes(before, dispute))


def update_dispute(request: Request) -> Obj:
    dispute = request.get("dispute", request.path_params["id"])
    if dispute["status"] not in _OPEN:
        raise invalid(
            f"This dispute has status {dispute['status']}; evidence can no longer be changed."
        )
    params = request.params
    due_by = int(dispute["evidence_details"]["due_by"] or 0)
    if not due_by or request.now() > due_by:
        dispute["evidence_details"]["past_due"] = bool(due_by)
        raise invalid(
            "The deadline to respond to this dispute has passed; evidence can no longer be "
            "submitted.",
            param="evidence",
        )
    before = copy(dispute)
    evidence = params.get("evidence")
    if evidence is not None:
        if not isinstance(evidence, dict):
            raise invalid("Invalid hash", param="evidence")
        for name, value in evidence.items():
            if name not in EVIDENCE_FIELDS:
                raise invalid(
                    f"Received unknown parameter: evidence[{name}]", param=f"evidence[{name}]"
                )
            if name in FILE_FIELDS and value:
                evidence_file(request, name, str(value))
        for name, value in evidence.items():
            dispute["evidence"][name] = optional_str(value)
        dispute["evidence_details"]["has_evidence"] = any(
            dispute["evidence"][name] for name in EVIDENCE_FIELDS
        )
    dispute["metadata"] = apply_metadata(dispute["metadata"], params.get("metadata"))
    submit = as_bool(params.get("submit", "true"), "submit")
    if submit:
        dispute["status"] = "warning_under_review" if _inquiry(dispute) else "under_review"
        dispute["evidence_details"]["submission_count"] += 1
    changed = previous_attributes(before, dispute)
    if changed:
        request.emit("charge.dispute.updated", dispute, changed)
    text = dispute["evidence"]["uncategorized_text"]
    if submit and text in ("winning_evidence", "losing_evidence"):
        close_dispute(request, dispute, "won" if text == "winning_evidence" else "lost")
    return dispute


def accept_dispute(request: Request) -> Obj:
    dispute = request.get("dispute", request.path_params["id"])
    if dispute["status"] not in _OPEN | {"under_review", "warning_under_review"}:
        raise invalid(f"This dispute is already closed (status {dispute['status']}).")
    close_dispute(request, dispute, "lost")
    return dispute


def decide_dispute(request: Request) -> Obj:
    """The network's decision: ``outcome=won`` or ``lost``."""
    dispute = request.get("dispute", request.path_params["id"])
    outcome = str(request.params.get("outcome", ""))
    if outcome not in ("won", "lost"):
        raise invalid("outcome must be won or lost", param="outcome")
    if dispute["status"] in ("won", "lost", "warning_closed"):
        raise invalid(f"This dispute is already closed (status {dispute['status']}).")
    close_dispute(request, dispute, outcome)
    return dispute


def retrieve_dispute(request: Request) -> Obj:
    return request.get("dispute", request.path_params["id"])


def list_disputes(request: Request) -> Obj:
    charge = request.params.get("charge")
    payment_intent = request.params.get("payment_intent")
    return list_object(
        request,
        request.account.all("dispute"),
        "/v1/disputes",
        lambda d: charge in (None, d["charge"]) and payment_intent in (None, d["payment_intent"]),
    )


def raise_early_fraud_warning(request: Request) -> Obj:
    """The network warns of fraud on a charge (``fraud_type``, ``unauthorized_use_of_card``
    by default): a ``radar.early_fraud_warning`` and its ``.created`` event."""
    charge = request.get("charge", request.path_params["id"])
    fraud_type = str(request.params.get("fraud_type") or "unauthorized_use_of_card")
    if fraud_type not in FRAUD_TYPES:
        raise invalid(f"fraud_type must be one of {', '.join(FRAUD_TYPES)}", param="fraud_type")
    return early_fraud_warning_op(request, charge, fraud_type)


def early_fraud_warning_op(call: Call, charge: Obj, fraud_type: str) -> Obj:
    """Record the network's early fraud warning on ``charge`` (``.created`` event)."""
    warning: Obj = {
        "id": new_id("issfr"),
        "object": "radar.early_fraud_warning",
        "actionable": not charge.get("disputed") and not charge.get("refunded"),
        "charge": charge["id"],
        "created": call.now(),
        "fraud_type": fraud_type,
        "livemode": False,
        "payment_intent": charge.get("payment_intent"),
    }
    call.account.add(warning)
    call.emit("radar.early_fraud_warning.created", warning)
    return warning


def retrieve_early_fraud_warning(request: Request) -> Obj:
    return request.get("radar.early_fraud_warning", request.path_params["id"])


def list_early_fraud_warnings(request: Request) -> Obj:
    charge = request.params.get("charge")
    return list_object(
        request,
        request.account.all("radar.early_fraud_warning"),
        "/v1/radar/early_fraud_warnings",
        lambda w: charge in (None, w["charge"]),
    )


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/disputes/{id}", update_dispute),
    Endpoint("POST", "/v1/disputes/{id}/close", accept_dispute),
    Endpoint("POST", "/_sandbox/disputes/{id}/close", decide_dispute, control=True),
    Endpoint("GET", "/v1/disputes/{id}", retrieve_dispute),
    Endpoint("GET", "/v1/disputes", list_disputes),
    Endpoint(
        "POST",
        "/_sandbox/charges/{id}/early_fraud_warning",
        raise_early_fraud_warning,
        control=True,
    ),
    Endpoint("GET", "/v1/radar/early_fraud_warnings/{id}", retrieve_early_fraud_warning),
    Endpoint("GET", "/v1/radar/early_fraud_warnings", list_early_fraud_warnings),
)
