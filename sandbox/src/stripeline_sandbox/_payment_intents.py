"""PaymentIntents through every card status, with 3-D Secure, declines and manual capture.

``requires_payment_method`` → ``requires_confirmation`` → ``requires_action``
(3-D Secure, finished by ``POST /_sandbox/payment_intents/{id}/authenticate``
with ``outcome=succeeded|failed``) → ``requires_capture`` (manual capture) →
``succeeded``; or ``canceled``. A declined attempt returns to
``requires_payment_method`` with ``last_payment_error`` and answers 402.

Bank debits (``us_bank_account``, see ``_bank_accounts``) are asynchronous:
confirming moves the PaymentIntent to ``processing`` with a ``pending``
charge (``charge.pending``, ``payment_intent.processing``). The debit settles
``SETTLEMENT_DELAY`` seconds of sandbox time later (at the start of the
account's next request after that moment, or at once on
``POST /_sandbox/payment_intents/{id}/settle``): ``succeeded``
(``charge.succeeded``, ``payment_intent.succeeded``) or, for a failing test
account, back to ``requires_payment_method`` with ``last_payment_error``
(``charge.failed``, ``payment_intent.payment_failed``).

Other modules learn of a PaymentIntent that succeeded, or whose debit
failed, through ``World.payment_outcome_handlers`` (``_app`` wires them:
invoices mark themselves paid, Checkout Sessions complete).
"""

from __future__ import annotations

from typing import Any

from stripeline_sandbox._balance_transactions import for_charge, record, release_due
from stripeline_sandbox._bank_accounts import TestBankAccount
from stripeline_sandbox._cards import DECLINE_MESSAGES, TestCard
from stripeline_sandbox._charges import new_charge
from stripeline_sandbox._connect import destination_of, pay_destination
from stripeline_sandbox._disputes import after_card_charge
from stripeline_sandbox._errors import invalid
from stripeline_sandbox._ids import new_id, random_part
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._objects import apply_metadata, copy, previous_attributes
from stripeline_sandbox._payment_methods import (
    attach,
    bank_account_of,
    card_error,
    card_of,
    payment_method_from,
    resolve,
)
from stripeline_sandbox._refunds import settle_pending_refunds
from stripeline_sandbox._routes import (
    Call,
    Endpoint,
    Request,
    as_bool,
    as_int,
    check_client_secret,
    optional_str,
    required,
)
from stripeline_sandbox._state import Account, Obj, World

#: Sandbox seconds a bank debit stays ``processing`` (ACH: about 4 business days).
SETTLEMENT_DELAY = 4 * 86400
#: Hidden record of the account's processing PaymentIntents: id → settlement time.
_PROCESSING = "__processing_payment_intents__"
#: The failure of ``outcome=failed`` forced on a debit that would succeed.
BANK_FAILED_MESSAGE = "The customer's account has insufficient funds to cover this payment."


def _notify(call: Call, payment_intent: Obj) -> None:
    """Tell the objects a PaymentIntent pays for (invoices, Checkout Sessions) that
    it succeeded or its bank debit failed: ``World.payment_outcome_handlers``."""
    for handler in call.world.payment_outcome_handlers:
        handler(call, payment_intent)


NOUN = "payment_intent"
MINIMUM_AMOUNT = 50
_CANCELABLE = {
    "requires_payment_method",
    "requires_confirmation",
    "requires_action",
    "requires_capture",
    "processing",
}
_UPDATABLE = {"requires_payment_method", "requires_confirmation", "requires_action"}


def unexpected_state(payment_intent: Obj, action: str, allowed: str) -> Exception:
    return invalid(
        f"This PaymentIntent's {action} could not be performed because it has a status of "
        f"{payment_intent['status']}. Only a PaymentIntent with one of the following statuses "
        f"may be {action}: {allowed}.",
        code="payment_intent_unexpected_state",
    )


def _customer_id(call: Call, value: Any) -> str | None:
    customer_id = optional_str(value)
    if customer_id is not None:
        call.get("customer", customer_id, param="customer")
    return customer_id


def create_payment_intent(request: Request) -> Obj:
    return create_payment_intent_op(request, request.params)


def create_payment_intent_op(call: Call, params: dict[str, Any]) -> Obj:
    """Create a PaymentIntent from ``POST /v1/payment_intents`` parameters (and
    confirm it with them when ``confirm`` is true)."""
    amount = as_int(required(params, "amount"), "amount", minimum=1)
    if amount < MINIMUM_AMOUNT:
        raise invalid("Amount must be at least $0.50 usd", param="amount", code="amount_too_small")
    currency = str(required(params, "currency")).lower()
    customer = _customer_id(call, params.get("customer"))
    capture_method = str(params.get("capture_method") or "automatic_async")
    if capture_method not in ("automatic", "automatic_async", "manual"):
        raise invalid(f"Invalid capture_method: {capture_method}", param="capture_method")
    confirmation_method = str(params.get("confirmation_method") or "automatic")
    payment_method = None
    if params.get("payment_method"):
        payment_method = resolve(call, str(params["payment_method"]))
    destination = destination_of(call, params)
    pi_id = new_id("pi")
    automatic = params.get("automatic_payment_methods")
    payment_intent: Obj = {
        "id": pi_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": None,
        "application_fee_amount": destination[1] if destination else None,
        "automatic_payment_methods": (
            {"allow_redirects": "always", "enabled": True}
            if isinstance(automatic, dict) and automatic.get("enabled") in ("true", True)
            else None
        ),
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": capture_method,
        "client_secret": f"{pi_id}_secret_{random_part(25)}",
        "confirmation_method": confirmation_method,
        "created": call.now(),
        "currency": currency,
        "customer": customer,
        "customer_account": None,
        "description": optional_str(params.get("description")),
        "excluded_payment_method_types": None,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": apply_metadata({}, params.get("metadata")),
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": payment_method["id"] if payment_method else None,
        "payment_method_configuration_details": None,
        "payment_method_options": {
            "card": {
                "installments": None,
                "mandate_options": None,
                "network": None,
                "request_three_d_secure": "automatic",
            }
        },
        "payment_method_types": list(params.get("payment_method_types") or ["card"]),
        "processing": None,
        "receipt_email": optional_str(params.get("receipt_email")),
        "review": None,
        "setup_future_usage": optional_str(params.get("setup_future_usage")),
        "shipping": None,
        "source": None,
        "statement_descriptor": optional_str(params.get("statement_descriptor")),
        "statement_descriptor_suffix": optional_str(params.get("statement_descriptor_suffix")),
        "status": "requires_confirmation" if payment_method else "requires_payment_method",
        "transfer_data": {"destination": destination[0]} if destination else None,
        "transfer_group": optional_str(params.get("transfer_group")),
    }
    call.account.add(payment_intent)
    if destination is not None:
        call.account.hidden(pi_id)["destination"] = destination
    call.emit("payment_intent.created", payment_intent)
    if as_bool(params.get("confirm", "false"), "confirm"):
        confirm(call, payment_intent, params)
    return payment_intent


def confirm(call: Call, payment_intent: Obj, params: dict[str, Any]) -> None:
    """Confirm ``payment_intent`` with ``POST …/confirm`` parameters, whatever its status."""
    payment_method = payment_method_from(call, params)
    if payment_method is None:
        if not payment_intent["payment_method"]:
            raise invalid(
                "You cannot confirm this PaymentIntent because it's missing a payment method. "
                "To confirm the PaymentIntent with a payment method, pass `payment_method`.",
                code="payment_intent_unexpected_state",
            )
        payment_method = resolve(call, str(payment_intent["payment_method"]))
    payment_intent["payment_method"] = payment_method["id"]
    payment_intent["last_payment_error"] = None
    if params.get("return_url"):
        call.account.hidden(payment_intent["id"])["return_url"] = str(params["return_url"])
    if "setup_future_usage" in params:
        payment_intent["setup_future_usage"] = optional_str(params["setup_future_usage"])
    bank_account = bank_account_of(call, payment_method)
    if bank_account is not None:
        _process(call, payment_intent, payment_method)
        return
    card = card_of(call, payment_method)
    off_session = as_bool(params.get("off_session", "false"), "off_session")
    set_up = bool(call.account.hidden(payment_method["id"]).get("set_up"))
    needs_authentication = (
        card.three_d_secure == "always"
        or (card.three_d_secure == "unless_setup" and not (off_session and set_up))
        or (card.three_d_secure == "on_session" and not off_session)
    )
    if needs_authentication and not call.account.hidden(payment_intent["id"]).pop(
        "authenticated", False
    ):
        if off_session:
            _fail(
                call,
                payment_intent,
                payment_method,
                card,
                ("authentication_required", "authentication_required"),
            )
        _require_action(call, payment_intent)
        return
    _charge(call, payment_intent, payment_method, card)


def _require_action(call: Call, payment_intent: Obj) -> None:
    return_url = call.account.hidden(payment_intent["id"]).get("return_url")
    url = f"https://hooks.stripe.com/3d_secure_2/hosted/{payment_intent['id']}"
    payment_intent["status"] = "requires_action"
    payment_intent["next_action"] = (
        {"type": "redirect_to_url", "redirect_to_url": {"return_url": return_url, "url": url}}
        if return_url
        else {
            "type": "use_stripe_sdk",
            "use_stripe_sdk": {"type": "three_d_secure_redirect", "stripe_js": url},
        }
    )
    call.emit("payment_intent.requires_action", payment_intent)


def _fail(
    call: Call,
    payment_intent: Obj,
    payment_method: Obj,
    card: TestCard,
    decline: tuple[str, str] | None = None,
) -> None:
    """A declined attempt: failed charge, events, then the 402 card error."""
    decline = decline or card.decline
    assert decline is not None  # noqa: S101 - only called for declines
    charge = new_charge(call, payment_intent, payment_method, card, captured=False, decline=decline)
    code, decline_code = decline
    payment_intent["latest_charge"] = charge["id"]
    payment_intent["status"] = "requires_payment_method"
    payment_intent["next_action"] = None
    payment_intent["payment_method"] = None
    payment_intent["last_payment_error"] = {
        "charge": charge["id"],
        "code": code,
        "decline_code": decline_code,
        "doc_url": f"https://docs.stripe.com/error-codes#{code.replace('_', '-')}",
        "message": DECLINE_MESSAGES.get(decline_code, "Your card was declined."),
        "payment_method": copy(payment_method),
        "type": "card_error",
    }
    call.emit("charge.failed", charge)
    call.emit("payment_intent.payment_failed", payment_intent)
    raise card_error(
        card,
        decline=decline,
        charge=charge["id"],
        payment_intent=copy(payment_intent),
        payment_method=copy(payment_method),
    )


def _charge(call: Call, payment_intent: Obj, payment_method: Obj, card: TestCard) -> None:
    if card.decline is not None:
        _fail(call, payment_intent, payment_method, card)
    manual = payment_intent["capture_method"] == "manual"
    charge = new_charge(call, payment_intent, payment_method, card, captured=not manual)
    charge["transfer_group"] = payment_intent["transfer_group"]
    if not manual:
        _pay_destination(call, payment_intent, charge)
    payment_intent["latest_charge"] = charge["id"]
    payment_intent["next_action"] = None
    amount = int(payment_intent["amount"])
    call.emit("charge.succeeded", charge)
    if manual:
        payment_intent["status"] = "requires_capture"
        payment_intent["amount_capturable"] = amount
        call.emit("payment_intent.amount_capturable_updated", payment_intent)
    else:
        payment_intent["status"] = "succeeded"
        payment_intent["amount_received"] = amount
        call.emit("payment_intent.succeeded", payment_intent)
    _set_up_for_future(call, payment_intent, payment_method)
    if not manual:
        _notify(call, payment_intent)
    if not manual:
        after_card_charge(call, charge, card)


def _pay_destination(call: Call, payment_intent: Obj, charge: Obj) -> None:
    """A destination charge (``transfer_data``): its transfer once captured."""
    destination = call.account.hidden(payment_intent["id"]).get("destination")
    if destination:
        account_id, fee = destination
        pay_destination(call, charge, (str(account_id), fee))


def _set_up_for_future(call: Call, payment_intent: Obj, payment_method: Obj) -> None:
    customer_id = payment_intent["customer"]
    if payment_intent["setup_future_usage"] and customer_id:
        customer = call.account.find("customer", customer_id)
        if customer is not None:
            attach(call, payment_method, customer)
            call.account.hidden(payment_method["id"])["set_up"] = True


# -- asynchronous payment methods (bank debits) -------------------------------


def _process(call: Call, payment_intent: Obj, payment_method: Obj) -> None:
    """Start a bank debit: a pending charge, the PaymentIntent ``processing``."""
    if payment_intent["capture_method"] == "manual":
        raise invalid(
            "The payment method type us_bank_account does not support manual capture.",
            param="capture_method",
        )
    if "us_bank_account" not in payment_intent["payment_method_types"]:
        payment_intent["payment_method_types"] = [
            *payment_intent["payment_method_types"],
            "us_bank_account",
        ]
    charge = new_charge(call, payment_intent, payment_method, None, captured=True, pending=True)
    charge["paid"] = False
    payment_intent["latest_charge"] = charge["id"]
    payment_intent["next_action"] = None
    payment_intent["status"] = "processing"
    call.account.hidden(_PROCESSING)[payment_intent["id"]] = call.now() + SETTLEMENT_DELAY
    call.emit("charge.pending", charge)
    call.emit("payment_intent.processing", payment_intent)


def settle_payment(call: Call, payment_intent: Obj, outcome: str | None = None) -> None:
    """Settle a ``processing`` bank debit: as its test account says, or as ``outcome``
    (``succeeded`` | ``failed``) forces."""
    call.account.hidden(_PROCESSING).pop(payment_intent["id"], None)
    charge = call.get("charge", payment_intent["latest_charge"])
    payment_method = call.get("payment_method", str(charge["payment_method"]), "PaymentMethod")
    bank_account = bank_account_of(call, payment_method) or TestBankAccount("")
    failure = bank_account.failure
    if outcome == "succeeded":
        failure = None
    elif outcome == "failed" and failure is None:
        failure = ("insufficient_funds", BANK_FAILED_MESSAGE)
    before = copy(charge)
    amount = int(payment_intent["amount"])
    if failure is None:
        charge["status"] = "succeeded"
        charge["paid"] = True
        payment_intent["status"] = "succeeded"
        payment_intent["amount_received"] = amount
        call.emit("charge.succeeded", charge, previous_attributes(before, charge))
        call.emit("payment_intent.succeeded", payment_intent)
        _set_up_for_future(call, payment_intent, payment_method)
    else:
        code, message = failure
        charge["status"] = "failed"
        charge["failure_code"] = code
        charge["failure_message"] = message
        # The debit returned: its pending funds taken back.
        charge["failure_balance_transaction"] = record(
            call,
            amount=-int(charge["amount_captured"] or charge["amount"]),
            currency=str(charge["currency"]),
            type="payment_failure_refund",
            reporting_category="charge_failure",
            source=str(charge["id"]),
            description="Payment failure refund",
        )
        charge["outcome"] = {
            **charge["outcome"],
            "network_status": "declined_by_network",
            "reason": code,
            "seller_message": message,
            "type": "issuer_declined",
        }
        payment_intent["status"] = "requires_payment_method"
        payment_intent["payment_method"] = None
        payment_intent["last_payment_error"] = {
            "charge": charge["id"],
            "code": code,
            "decline_code": None,
            "doc_url": f"https://docs.stripe.com/error-codes#{code.replace('_', '-')}",
            "message": message,
            "payment_method": copy(payment_method),
            "type": "card_error",
        }
        call.emit("charge.failed", charge, previous_attributes(before, charge))
        call.emit("payment_intent.payment_failed", payment_intent)
    _notify(call, payment_intent)


def settle_due(call: Call) -> None:
    """Settle every bank debit of the account whose settlement time has passed
    (and make available the balance transactions that are due).

    Their events carry no request (as Stripe's events for asynchronous outcomes).
    """
    release_due(call)
    settle_pending_refunds(call)
    due = call.account.hidden(_PROCESSING)
    if not due:
        return
    now = call.now()
    for pi_id, moment in sorted(due.items(), key=lambda entry: (entry[1], entry[0])):
        if moment > now:
            continue
        payment_intent = call.account.find(NOUN, pi_id)
        if payment_intent is None or payment_intent["status"] != "processing":
            due.pop(pi_id, None)
            continue
        first = len(call.events)
        settle_payment(call, payment_intent)
        for event in call.events[first:]:
            event["request"] = {"id": None, "idempotency_key": None}


def settle_all_due(world: World, accounts: list[Account]) -> None:
    """``settle_due`` for ``accounts`` outside any API call (the sandbox clock moved);
    their events are delivered as usual."""
    for account in accounts:
        call = Call(world, account)
        with account.lock:
            settle_due(call)
        if call.events:
            world.deliverer.enqueue(account, call.events)


def settle_payment_intent(request: Request) -> Obj:
    """Settle a ``processing`` bank debit now: as its test account says, or
    ``outcome=succeeded|failed``."""
    payment_intent = request.get(NOUN, request.path_params["id"])
    if payment_intent["status"] != "processing":
        raise unexpected_state(payment_intent, "settlement", "processing")
    outcome = optional_str(request.params.get("outcome"))
    if outcome not in (None, "succeeded", "failed"):
        raise invalid("outcome must be succeeded or failed", param="outcome")
    first = len(request.events)
    settle_payment(request, payment_intent, outcome)
    for event in request.events[first:]:
        event["request"] = {"id": None, "idempotency_key": None}
    return payment_intent


def confirm_payment_intent(request: Request) -> Obj:
    check_client_secret(request, request.get(NOUN, request.path_params["id"]), "PaymentIntent")
    return confirm_payment_intent_op(request, request.path_params["id"], request.params)


def confirm_payment_intent_op(call: Call, payment_intent_id: str, params: dict[str, Any]) -> Obj:
    """``POST /v1/payment_intents/{id}/confirm``: refused unless the PaymentIntent awaits it."""
    payment_intent = call.get(NOUN, payment_intent_id)
    if payment_intent["status"] not in (
        "requires_payment_method",
        "requires_confirmation",
        "requires_action",
    ):
        raise unexpected_state(
            payment_intent,
            "confirm",
            "requires_payment_method, requires_confirmation, requires_action",
        )
    confirm(call, payment_intent, params)
    return payment_intent


def authenticate_payment_intent(request: Request) -> Obj:
    """Finish 3-D Secure as the customer would: ``outcome=succeeded`` or ``failed``."""
    payment_intent = request.get(NOUN, request.path_params["id"])
    if payment_intent["status"] != "requires_action":
        raise unexpected_state(payment_intent, "authentication", "requires_action")
    outcome = str(request.params.get("outcome", "succeeded"))
    payment_method = request.get(
        "payment_method", payment_intent["payment_method"], "PaymentMethod"
    )
    if outcome == "failed":
        payment_intent["status"] = "requires_payment_method"
        payment_intent["next_action"] = None
        payment_intent["payment_method"] = None
        payment_intent["last_payment_error"] = {
            "code": "payment_intent_authentication_failure",
            "doc_url": "https://docs.stripe.com/error-codes#payment-intent-authentication-failure",
            "message": "The provided PaymentMethod has failed authentication. You can provide "
            "payment_method_data or a new PaymentMethod to attempt to fulfill this PaymentIntent again.",
            "payment_method": copy(payment_method),
            "type": "invalid_request_error",
        }
        request.emit("payment_intent.payment_failed", payment_intent)
        return payment_intent
    if outcome != "succeeded":
        raise invalid("outcome must be succeeded or failed", param="outcome")
    if payment_intent["confirmation_method"] == "manual":
        request.account.hidden(payment_intent["id"])["authenticated"] = True
        payment_intent["status"] = "requires_confirmation"
        payment_intent["next_action"] = None
        return payment_intent
    try:
        _charge(request, payment_intent, payment_method, card_of(request, payment_method))
    except Exception as exc:
        if getattr(exc, "status", None) != 402:
            raise
    return payment_intent


def capture_payment_intent(request: Request) -> Obj:
    payment_intent = request.get(NOUN, request.path_params["id"])
    if payment_intent["status"] != "requires_capture":
        raise unexpected_state(payment_intent, "capture", "requires_capture")
    capturable = int(payment_intent["amount_capturable"])
    amount = as_int(
        request.params.get("amount_to_capture", capturable), "amount_to_capture", minimum=1
    )
    if amount > capturable:
        raise invalid(
            "The amount to capture must be less than or equal to the amount capturable.",
            param="amount_to_capture",
            code="amount_too_large",
        )
    payment_intent["metadata"] = apply_metadata(
        payment_intent["metadata"], request.params.get("metadata")
    )
    charge = request.get("charge", payment_intent["latest_charge"])
    before = copy(charge)
    charge["captured"] = True
    charge["amount_captured"] = amount
    charge["amount_refunded"] = int(charge["amount"]) - amount
    charge["balance_transaction"] = for_charge(request, charge, amount)
    _pay_destination(request, payment_intent, charge)
    payment_intent["status"] = "succeeded"
    payment_intent["amount_received"] = amount
    payment_intent["amount_capturable"] = 0
    request.emit("charge.captured", charge, previous_attributes(before, charge))
    request.emit("payment_intent.succeeded", payment_intent)
    _notify(request, payment_intent)
    card = request.account.hidden(charge["id"]).get("card")
    if isinstance(card, TestCard):
        after_card_charge(request, charge, card)
    return payment_intent


def cancel_payment_intent(request: Request) -> Obj:
    payment_intent = request.get(NOUN, request.path_params["id"])
    if payment_intent["status"] not in _CANCELABLE:
        raise unexpected_state(payment_intent, "cancel", ", ".join(sorted(_CANCELABLE)))
    reason = optional_str(request.params.get("cancellation_reason"))
    if reason not in (None, "duplicate", "fraudulent", "requested_by_customer", "abandoned"):
        raise invalid(f"Invalid cancellation_reason: {reason}", param="cancellation_reason")
    if payment_intent["status"] == "requires_capture":
        charge = request.get("charge", payment_intent["latest_charge"])
        before = copy(charge)
        charge["amount_refunded"] = charge["amount"]
        charge["refunded"] = True
        request.emit("charge.refunded", charge, previous_attributes(before, charge))
    payment_intent["status"] = "canceled"
    payment_intent["amount_capturable"] = 0
    payment_intent["next_action"] = None
    payment_intent["canceled_at"] = request.now()
    payment_intent["cancellation_reason"] = reason
    request.emit("payment_intent.canceled", payment_intent)
    return payment_intent


def update_payment_intent(request: Request) -> Obj:
    payment_intent = request.get(NOUN, request.path_params["id"])
    params = request.params
    if (
        set(params) - {"metadata", "description", "expand"}
        and payment_intent["status"] not in _UPDATABLE
    ):
        raise unexpected_state(payment_intent, "update", ", ".join(sorted(_UPDATABLE)))
    if "amount" in params:
        amount = as_int(params["amount"], "amount", minimum=1)
        if amount < MINIMUM_AMOUNT:
            raise invalid(
                "Amount must be at least $0.50 usd", param="amount", code="amount_too_small"
            )
        payment_intent["amount"] = amount
    if "currency" in params:
        payment_intent["currency"] = str(params["currency"]).lower()
    if "customer" in params:
        payment_intent["customer"] = _customer_id(request, params["customer"])
    for name in ("description", "receipt_email", "setup_future_usage"):
        if name in params:
            payment_intent[name] = optional_str(params[name])
    if params.get("payment_method"):
        payment_intent["payment_method"] = resolve(request, str(params["payment_method"]))["id"]
        payment_intent["status"] = "requires_confirmation"
    payment_intent["metadata"] = apply_metadata(payment_intent["metadata"], params.get("metadata"))
    return payment_intent


def retrieve_payment_intent(request: Request) -> Obj:
    payment_intent = request.get(NOUN, request.path_params["id"])
    check_client_secret(request, payment_intent, "PaymentIntent")
    return payment_intent


def list_payment_intents(request: Request) -> Obj:
    customer = request.params.get("customer")
    return list_object(
        request,
        request.account.all(NOUN),
        "/v1/payment_intents",
        lambda p: customer in (None, p["customer"]),
    )


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/payment_intents", create_payment_intent),
    Endpoint("POST", "/_sandbox/payment_intents/{id}/settle", settle_payment_intent, control=True),
    Endpoint("POST", "/v1/payment_intents/{id}/confirm", confirm_payment_intent, publishable=True),
    Endpoint(
        "POST",
        "/_sandbox/payment_intents/{id}/authenticate",
        authenticate_payment_intent,
        control=True,
    ),
    Endpoint("POST", "/v1/payment_intents/{id}/capture", capture_payment_intent),
    Endpoint("POST", "/v1/payment_intents/{id}/cancel", cancel_payment_intent),
    Endpoint("POST", "/v1/payment_intents/{id}", update_payment_intent),
    Endpoint("GET", "/v1/payment_intents/{id}", retrieve_payment_intent, publishable=True),
    Endpoint("GET", "/v1/payment_intents", list_payment_intents),
)
