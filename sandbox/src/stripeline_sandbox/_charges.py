"""Charges: made by PaymentIntents; retrieved, listed and updated here.

A bank debit's charge is ``pending`` until it settles (``settle_charge``).
"""

from __future__ import annotations

from stripeline_sandbox._balance_transactions import for_charge
from stripeline_sandbox._cards import DECLINE_MESSAGES, TestCard
from stripeline_sandbox._ids import new_id
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._objects import apply_metadata, copy, previous_attributes
from stripeline_sandbox._routes import Call, Endpoint, Request, optional_str
from stripeline_sandbox._state import Obj


def new_charge(
    call: Call,
    payment_intent: Obj,
    payment_method: Obj,
    card: TestCard | None,
    *,
    captured: bool,
    decline: tuple[str, str] | None = None,
    pending: bool = False,
) -> Obj:
    """Store the Charge of one payment attempt (failed when ``decline`` is given;
    ``pending`` for a bank debit that has not settled)."""
    amount = int(payment_intent["amount"])
    failed = decline is not None
    charge_id = new_id("ch")
    charge: Obj = {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount if captured and not failed else 0,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": None,
        "billing_details": copy(payment_method["billing_details"]),
        "calculated_statement_descriptor": "STRIPELINE SANDBOX",
        "captured": captured and not failed,
        "created": call.now(),
        "currency": payment_intent["currency"],
        "customer": payment_intent["customer"],
        "description": payment_intent["description"],
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": decline[0] if decline else None,
        "failure_message": DECLINE_MESSAGES.get(decline[1]) if decline else None,
        "fraud_details": {},
        "livemode": False,
        "metadata": {},
        "on_behalf_of": None,
        "outcome": {
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "declined_by_network" if failed else "approved_by_network",
            "reason": decline[1] if decline else None,
            "risk_level": "normal",
            "risk_score": 20,
            "seller_message": "The bank did not return any further details with this decline."
            if failed
            else "Payment complete.",
            "type": "issuer_declined" if failed else "authorized",
        },
        "paid": not failed,
        "payment_intent": payment_intent["id"],
        "payment_method": payment_method["id"],
        "payment_method_details": _details(payment_method, amount, failed),
        "receipt_email": payment_intent["receipt_email"],
        "receipt_number": None,
        "receipt_url": f"https://pay.stripe.com/receipts/payment/{charge_id}",
        "refunded": False,
        "refunds": {
            "object": "list",
            "data": [],
            "has_more": False,
            "url": f"/v1/charges/{charge_id}/refunds",
        },
        "review": None,
        "shipping": None,
        "source": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "failed" if failed else "pending" if pending else "succeeded",
        "transfer_data": None,
        "transfer_group": None,
    }
    if card is not None:
        _radar(charge, card)
    call.account.add(charge)
    if card is not None:
        call.account.hidden(charge_id)["card"] = card
    if captured and not failed:
        charge["balance_transaction"] = for_charge(call, charge, amount)
    return charge


def _radar(charge: Obj, card: TestCard) -> None:
    """Radar's verdict on a test card: its risk level, and a block that never
    reaches the network."""
    outcome = charge["outcome"]
    outcome["risk_level"] = card.risk_level
    outcome["risk_score"] = {"normal": 20, "elevated": 70, "highest": 95}.get(card.risk_level, 20)
    if card.blocked:
        outcome.update(
            network_status="not_sent_to_network",
            reason="highest_risk_level",
            seller_message="Stripe blocked this payment as too risky.",
            type="blocked",
        )
    elif card.risk_level == "elevated" and charge["status"] != "failed":
        outcome.update(
            reason="elevated_risk_level",
            seller_message="Stripe evaluated this payment as having elevated risk, and placed it in your manual review queue.",
            type="manual_review",
        )


def _details(payment_method: Obj, amount: int, failed: bool) -> Obj:
    """``payment_method_details`` of a charge made with ``payment_method``."""
    if payment_method["type"] == "us_bank_account":
        bank = payment_method["us_bank_account"]
        return {
            "type": "us_bank_account",
            "us_bank_account": {
                "account_holder_type": bank["account_holder_type"],
                "account_type": bank["account_type"],
                "bank_name": bank["bank_name"],
                "expected_debit_date": None,
                "fingerprint": bank["fingerprint"],
                "last4": bank["last4"],
                "mandate": None,
                "payment_reference": None,
                "routing_number": bank["routing_number"],
            },
        }
    card_details = payment_method["card"]
    return {
        "card": {
            "amount_authorized": None if failed else amount,
            "authorization_code": None,
            "brand": card_details["brand"],
            "checks": copy(card_details["checks"]),
            "country": card_details["country"],
            "exp_month": card_details["exp_month"],
            "exp_year": card_details["exp_year"],
            "extended_authorization": {"status": "disabled"},
            "fingerprint": card_details["fingerprint"],
            "funding": card_details["funding"],
            "incremental_authorization": {"status": "unavailable"},
            "installments": None,
            "last4": card_details["last4"],
            "mandate": None,
            "multicapture": {"status": "unavailable"},
            "network": card_details["brand"],
            "network_token": {"used": False},
            "network_transaction_id": None,
            "overcapture": {"maximum_amount_capturable": amount, "status": "unavailable"},
            "regulated_status": "unregulated",
            "three_d_secure": None,
            "transaction_link_id": None,
            "wallet": None,
        },
        "type": "card",
    }


def retrieve_charge(request: Request) -> Obj:
    return request.get("charge", request.path_params["id"])


def update_charge(request: Request) -> Obj:
    charge = request.get("charge", request.path_params["id"])
    before = copy(charge)
    params = request.params
    charge["metadata"] = apply_metadata(charge["metadata"], params.get("metadata"))
    for name in ("description", "receipt_email"):
        if name in params:
            charge[name] = optional_str(params[name])
    changed = previous_attributes(before, charge)
    if changed:
        request.emit("charge.updated", charge, changed)
    return charge


def list_charges(request: Request) -> Obj:
    customer = request.params.get("customer")
    payment_intent = request.params.get("payment_intent")
    return list_object(
        request,
        request.account.all("charge"),
        "/v1/charges",
        lambda c: (
            customer in (None, c["customer"]) and payment_intent in (None, c["payment_intent"])
        ),
    )


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("GET", "/v1/charges/{id}", retrieve_charge),
    Endpoint("POST", "/v1/charges/{id}", update_charge),
    Endpoint("GET", "/v1/charges", list_charges),
)
