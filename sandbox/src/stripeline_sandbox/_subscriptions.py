"""Subscriptions and subscription items.

Create with ``items[]`` (trials, ``payment_behavior``, a coupon or promotion
code in ``discounts``), update (quantities,
price swaps with ``proration_behavior``, ``cancel_at_period_end``,
``cancel_at``, ``pause_collection``, ``trial_end=now``, default payment
method), cancel now (``DELETE``), ``/resume`` a ``paused`` subscription.
The cycle itself (renewals, trial end, retries) is ``_billing``.
"""

from __future__ import annotations

from typing import Any

from stripeline_sandbox._billing import (
    add_interval,
    collect,
    cycle_invoice,
    new_item,
    period_of,
    reset_anchor,
    settle,
)
from stripeline_sandbox._billing_settings import TRIAL_WILL_END_NOTICE, billing_now
from stripeline_sandbox._coupons import take_discounts
from stripeline_sandbox._errors import StripeError, invalid
from stripeline_sandbox._ids import new_id
from stripeline_sandbox._invoicing import (
    end_subscription,
    finalize,
    include_pending_items,
    new_invoice,
    void,
)
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._objects import apply_metadata, copy, includable, previous_attributes
from stripeline_sandbox._payment_methods import attach, resolve
from stripeline_sandbox._prices import plan_of
from stripeline_sandbox._prorations import Change, proration_items
from stripeline_sandbox._routes import (
    Call,
    Endpoint,
    Request,
    as_bool,
    as_int,
    optional_str,
    required,
)
from stripeline_sandbox._state import Account, Obj

NOUN = "subscription"
PRORATION_BEHAVIORS = ("create_prorations", "always_invoice", "none")
PAYMENT_BEHAVIORS = (
    "allow_incomplete",
    "default_incomplete",
    "error_if_incomplete",
    "pending_if_incomplete",
)
PAUSE_BEHAVIORS = ("keep_as_draft", "mark_uncollectible", "void")
#: Stripe refuses trials longer than two years.
MAX_TRIAL_SECONDS = 730 * 86400


def _price(call: Call, given: Any, param: str) -> Obj:
    price = call.get("price", str(given), param=param)
    if price["recurring"] is None:
        raise invalid(
            f"The price specified ({price['id']}) is not recurring; "
            "subscriptions need recurring prices.",
            param=param,
        )
    if not price["active"]:
        raise invalid(f"The price specified ({price['id']}) is inactive.", param=param)
    return price


def _items_param(params: dict[str, Any]) -> list[dict[str, Any]]:
    items = params.get("items") or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise invalid("Invalid array", param="items")
    return items


def _payment_method(call: Call, customer: Obj, given: Any) -> str | None:
    reference = optional_str(given)
    if reference is None:
        return None
    payment_method = resolve(call, reference, "default_payment_method")
    if payment_method["customer"] is None:
        attach(call, payment_method, customer)
    elif payment_method["customer"] != customer["id"]:
        raise invalid(
            "The payment method must be attached to the subscription's customer.",
            param="default_payment_method",
        )
    return str(payment_method["id"])


def _trial_end(call: Call, given: Any, now: int) -> int | None:
    if given in (None, ""):
        return None
    if given == "now":
        return now
    moment = as_int(given, "trial_end")
    if moment <= now:
        raise invalid("trial_end must be in the future or 'now'.", param="trial_end")
    if moment - now > MAX_TRIAL_SECONDS:
        raise invalid("trial_end can be at most two years in the future.", param="trial_end")
    return moment


def _same_interval(prices: list[Obj]) -> None:
    intervals = {(p["recurring"]["interval"], p["recurring"]["interval_count"]) for p in prices}
    if len(intervals) > 1:
        raise invalid(
            "All prices on a subscription must have the same recurring interval.", param="items"
        )


def create_subscription(request: Request) -> Obj:
    return create_subscription_op(request, request.params)


def create_subscription_op(call: Call, params: dict[str, Any]) -> Obj:
    """A subscription from ``POST /v1/subscriptions`` parameters."""
    settle(call)
    customer = call.get("customer", str(required(params, "customer")), param="customer")
    clock = customer["test_clock"]
    now = billing_now(call, clock)
    items = _items_param(params)
    if not items:
        raise invalid("Missing required param: items.", param="items")
    prices = [_price(call, i.get("price"), f"items[{n}][price]") for n, i in enumerate(items)]
    _same_interval(prices)
    currencies = {p["currency"] for p in prices}
    if len(currencies) > 1:
        raise invalid("All prices must have the same currency.", param="items")
    payment_behavior = str(params.get("payment_behavior") or "allow_incomplete")
    if payment_behavior not in PAYMENT_BEHAVIORS:
        raise invalid(f"Invalid payment_behavior: {payment_behavior}", param="payment_behavior")
    collection_method = str(params.get("collection_method") or "charge_automatically")
    trial_end = _trial_end(call, params.get("trial_end"), now)
    if params.get("trial_period_days") not in (None, ""):
        days = as_int(params["trial_period_days"], "trial_period_days", minimum=0)
        trial_end = now + days * 86400 if days else None
    elif trial_end is None and as_bool(params.get("trial_from_plan", False), "trial_from_plan"):
        days = prices[0]["recurring"]["trial_period_days"]
        trial_end = now + int(days) * 86400 if days else None
    if trial_end == now:
        trial_end = None
    settings = params.get("trial_settings") or {}
    missing = ((settings.get("end_behavior") or {}) if isinstance(settings, dict) else {}).get(
        "missing_payment_method", "create_invoice"
    )
    if missing not in ("create_invoice", "pause", "cancel"):
        raise invalid(
            f"Invalid missing_payment_method: {missing}",
            param="trial_settings[end_behavior][missing_payment_method]",
        )
    sub_id = new_id("sub")
    subscription: Obj = {
        "id": sub_id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": now,
        "billing_cycle_anchor_config": None,
        "billing_mode": {"flexible": None, "type": "classic"},
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": collection_method,
        "created": now,
        "currency": prices[0]["currency"],
        "customer": customer["id"],
        "customer_account": None,
        "days_until_due": (
            as_int(params["days_until_due"], "days_until_due", minimum=0)
            if params.get("days_until_due")
            else (30 if collection_method == "send_invoice" else None)
        ),
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": optional_str(params.get("description")),
        "discounts": [],
        "ended_at": None,
        "invoice_settings": {
            "account_tax_ids": None,
            "custom_fields": None,
            "description": None,
            "footer": None,
            "issuer": {"type": "self"},
        },
        "items": {
            "object": "list",
            "data": [],
            "has_more": False,
            "url": f"/v1/subscription_items?subscription={sub_id}",
        },
        "latest_invoice": None,
        "livemode": False,
        "metadata": apply_metadata({}, params.get("metadata")),
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "start_date": now,
        "status": "trialing" if trial_end else "incomplete",
        "test_clock": clock,
        "transfer_data": None,
        "trial_end": trial_end,
        "trial_settings": {"end_behavior": {"missing_payment_method": missing}},
        "trial_start": now if trial_end else None,
    }
    take_discounts(call, subscription, params)
    subscription["default_payment_method"] = _payment_method(
        call, customer, params.get("default_payment_method")
    )
    for item_params, price in zip(items, prices, strict=True):
        quantity = as_int(item_params.get("quantity", 1), "quantity", minimum=0)
        subscription["items"]["data"].append(
            new_item(call, subscription, price, quantity, item_params.get("metadata"))
        )
    call.account.add(subscription)
    if trial_end:
        subscription["billing_cycle_anchor"] = trial_end
        hidden = call.account.hidden(sub_id)
        hidden["anchor"], hidden["cycle"] = now, 0
        for item in subscription["items"]["data"]:
            item["current_period_start"], item["current_period_end"] = now, trial_end
    else:
        reset_anchor(call, subscription, now)
    _cancel_options(call, subscription, params)
    mark = len(call.events)
    # Entitlements are computed once the subscription is reported (created, below).
    call.quiet_entitlements.add(subscription["customer"])
    invoice = cycle_invoice(call, subscription, "subscription_create")
    if trial_end:
        collect(call, invoice)
        if trial_end - now <= TRIAL_WILL_END_NOTICE:
            call.account.hidden(sub_id)["trial_will_end_sent"] = True
            call.emit("customer.subscription.trial_will_end", subscription)
    elif collection_method == "send_invoice":
        collect(call, invoice)
        subscription["status"] = "active"
    elif payment_behavior == "default_incomplete":
        # Stripe waits for the customer to confirm the first invoice's
        # PaymentIntent (Stripe.js, with the invoice's confirmation_secret):
        # no payment is attempted, even with a default payment method.
        invoice["auto_advance"] = True
        finalize(call, invoice)
        invoice["next_payment_attempt"] = None
    else:
        collect(call, invoice, off_session=False)
        if invoice["status"] == "paid":
            subscription["status"] = "active"
        elif payment_behavior == "error_if_incomplete":
            # No subscription is made: the attempt's invoice is voided, the rest removed.
            void(call, invoice)
            for item in subscription["items"]["data"]:
                call.account.remove(item["id"])
            call.account.remove(sub_id)
            raise StripeError(
                402,
                "The subscription's first payment failed.",
                type="card_error",
                code="card_declined",
                save_idempotent=True,
            )
    # Stripe reports the subscription once, first, in the state the call left it.
    for event in list(call.events[mark:]):
        if (
            event["type"] == "customer.subscription.updated"
            and event["data"]["object"]["id"] == sub_id
        ):
            call.events.remove(event)
            call.account.remove(event["id"])
    call.quiet_entitlements.discard(subscription["customer"])
    created = call.emit("customer.subscription.created", subscription)
    call.events.remove(created)
    call.events.insert(mark, created)
    return subscription


def _cancel_options(call: Call, subscription: Obj, params: dict[str, Any]) -> None:
    end = period_of(subscription)[1]
    if "cancel_at_period_end" in params:
        at_end = as_bool(params["cancel_at_period_end"], "cancel_at_period_end")
        subscription["cancel_at_period_end"] = at_end
        subscription["cancel_at"] = end if at_end else None
        subscription["canceled_at"] = (
            billing_now(call, subscription["test_clock"]) if at_end else None
        )
        subscription["cancellation_details"]["reason"] = (
            "cancellation_requested" if at_end else None
        )
    if "cancel_at" in params:
        given = params["cancel_at"]
        if given in ("", None):
            subscription["cancel_at"] = None
            subscription["cancel_at_period_end"] = False
            subscription["canceled_at"] = None
            subscription["cancellation_details"]["reason"] = None
        else:
            moment = end if given == "max_period_end" else as_int(given, "cancel_at")
            subscription["cancel_at"] = moment
            subscription["cancel_at_period_end"] = moment == end
            subscription["cancellation_details"]["reason"] = "cancellation_requested"
    details = params.get("cancellation_details")
    if isinstance(details, dict):
        for name in ("comment", "feedback"):
            if name in details:
                subscription["cancellation_details"][name] = optional_str(details[name])


def _apply_items(call: Call, subscription: Obj, given: list[dict[str, Any]]) -> list[Change]:
    """Change, add and delete items; return what changed for prorations."""
    changes: list[Change] = []
    current = {item["id"]: item for item in subscription["items"]["data"]}
    for n, entry in enumerate(given):
        item_id = entry.get("id")
        if item_id:
            item = current.get(str(item_id))
            if item is None:
                raise invalid(f"No such subscription item: '{item_id}'", param=f"items[{n}][id]")
            old_price, old_quantity = item["price"], int(item["quantity"])
            if as_bool(entry.get("deleted", False), "deleted"):
                subscription["items"]["data"].remove(item)
                item["deleted"] = True
                changes.append((item, old_price, old_quantity, None, 0))
                continue
            price = (
                _price(call, entry["price"], f"items[{n}][price]")
                if entry.get("price")
                else old_price
            )
            quantity = as_int(entry.get("quantity", old_quantity), "quantity", minimum=0)
            if price["id"] != old_price["id"]:
                item["price"], item["plan"] = copy(price), plan_of(price)
            item["quantity"] = quantity
            item["metadata"] = apply_metadata(item["metadata"], entry.get("metadata"))
            if price["id"] != old_price["id"] or quantity != old_quantity:
                changes.append((item, old_price, old_quantity, price, quantity))
        else:
            price = _price(call, entry.get("price"), f"items[{n}][price]")
            quantity = as_int(entry.get("quantity", 1), "quantity", minimum=0)
            item = new_item(call, subscription, price, quantity, entry.get("metadata"))
            start, end = period_of(subscription)
            item["current_period_start"], item["current_period_end"] = start, end
            subscription["items"]["data"].append(item)
            changes.append((item, None, 0, price, quantity))
    if not subscription["items"]["data"]:
        raise invalid("A subscription must keep at least one item.", param="items")
    return changes


def update_subscription(request: Request) -> Obj:
    return update_subscription_op(request, request.path_params["id"], request.params)


def update_subscription_op(call: Call, subscription_id: str, params: dict[str, Any]) -> Obj:
    """``POST /v1/subscriptions/{id}`` with these parameters."""
    settle(call)
    subscription = call.get(NOUN, subscription_id)
    if subscription["status"] in ("canceled", "incomplete_expired"):
        raise invalid(
            "A canceled subscription can only update its cancellation_details and metadata."
        )
    customer = call.account.objects[subscription["customer"]]
    now = billing_now(call, subscription["test_clock"])
    behavior = str(params.get("proration_behavior") or "create_prorations")
    if behavior not in PRORATION_BEHAVIORS:
        raise invalid(f"Invalid proration_behavior: {behavior}", param="proration_behavior")
    moment = as_int(params["proration_date"], "proration_date") if params.get(
        "proration_date"
    ) else now  # fmt: skip
    start, end = period_of(subscription)
    if not start <= moment <= end:
        raise invalid("proration_date must be within the current period.", param="proration_date")
    before = copy(subscription)
    old_interval = subscription["items"]["data"][0]["price"]["recurring"]
    changes = _apply_items(call, subscription, _items_param(params))
    _same_interval([i["price"] for i in subscription["items"]["data"]])
    new_interval = subscription["items"]["data"][0]["price"]["recurring"]
    interval_changed = (old_interval["interval"], old_interval["interval_count"]) != (
        new_interval["interval"],
        new_interval["interval_count"],
    )
    if "default_payment_method" in params:
        subscription["default_payment_method"] = _payment_method(
            call, customer, params["default_payment_method"]
        )
    for name in ("description",):
        if name in params:
            subscription[name] = optional_str(params[name])
    if "collection_method" in params:
        subscription["collection_method"] = str(params["collection_method"])
    if "days_until_due" in params:
        subscription["days_until_due"] = as_int(params["days_until_due"], "days_until_due")
    subscription["metadata"] = apply_metadata(subscription["metadata"], params.get("metadata"))
    if "pause_collection" in params:
        pause = params["pause_collection"]
        if pause in ("", None):
            subscription["pause_collection"] = None
        else:
            if not isinstance(pause, dict) or pause.get("behavior") not in PAUSE_BEHAVIORS:
                raise invalid(
                    "pause_collection[behavior] must be one of " + ", ".join(PAUSE_BEHAVIORS),
                    param="pause_collection[behavior]",
                )
            resumes_at = pause.get("resumes_at")
            subscription["pause_collection"] = {
                "behavior": pause["behavior"],
                "resumes_at": as_int(resumes_at, "pause_collection[resumes_at]")
                if resumes_at
                else None,
            }
    _cancel_options(call, subscription, params)
    trial_end = _trial_end(call, params.get("trial_end"), now)
    ends_trial = trial_end == now and subscription["status"] == "trialing"
    if trial_end is not None and trial_end > now:
        subscription["trial_end"] = trial_end
        subscription["status"] = "trialing"
        for item in subscription["items"]["data"]:
            item["current_period_end"] = trial_end
    reset = ends_trial or interval_changed or params.get("billing_cycle_anchor") == "now"
    trialing = subscription["status"] == "trialing" and not ends_trial
    pending: list[Obj] = []
    if interval_changed:
        # The old interval's unused time is credited; the new one is billed whole.
        changes = [(item, old, quantity, None, 0) for item, old, quantity, _, _ in changes]
    if changes and not trialing and behavior != "none":
        pending = proration_items(call, subscription, changes, moment)
    if reset:
        if ends_trial:
            subscription["trial_end"] = now
            subscription["status"] = "active"
        call.account.hidden(subscription["id"])["previous_start"] = start
        reset_anchor(call, subscription, now)
    call.emit(
        "customer.subscription.updated", subscription, previous_attributes(before, subscription)
    )
    if reset and not trialing:
        collect(call, cycle_invoice(call, subscription, "subscription_update"))
    elif pending and behavior == "always_invoice":
        invoice = new_invoice(
            call,
            customer,
            subscription=subscription,
            billing_reason="subscription_update",
            collection_method=subscription["collection_method"],
            period=(moment, moment),
            days_until_due=subscription["days_until_due"],
        )
        include_pending_items(call, invoice, subscription["id"])
        subscription["latest_invoice"] = invoice["id"]
        call.emit("invoice.created", invoice)
        collect(call, invoice)
    return subscription


def retrieve_subscription(request: Request) -> Obj:
    settle(request)
    return request.get(NOUN, request.path_params["id"])


def cancel_subscription(request: Request) -> Obj:
    settle(request)
    subscription = request.get(NOUN, request.path_params["id"])
    if subscription["status"] in ("canceled", "incomplete_expired"):
        raise invalid(f"No such subscription: '{subscription['id']}'", code="resource_missing")
    params = request.params
    details = params.get("cancellation_details")
    if isinstance(details, dict):
        for name in ("comment", "feedback"):
            if name in details:
                subscription["cancellation_details"][name] = optional_str(details[name])
    if as_bool(params.get("prorate", False), "prorate") and subscription["status"] == "active":
        now = billing_now(request, subscription["test_clock"])
        changes: list[Change] = [
            (item, item["price"], int(item["quantity"]), None, 0)
            for item in subscription["items"]["data"]
        ]
        proration_items(request, subscription, changes, now)
    end_subscription(request, subscription, "cancellation_requested")
    if as_bool(params.get("invoice_now", False), "invoice_now"):
        customer = request.account.objects[subscription["customer"]]
        invoice = new_invoice(
            request, customer, subscription=subscription, billing_reason="subscription_update"
        )
        include_pending_items(request, invoice, subscription["id"])
        request.emit("invoice.created", invoice)
        collect(request, invoice)
    return subscription


def resume_subscription(request: Request) -> Obj:
    """A ``paused`` subscription (trial ended without a payment method) starts again."""
    settle(request)
    subscription = request.get(NOUN, request.path_params["id"])
    if subscription["status"] != "paused":
        raise invalid(
            "Only a subscription with status `paused` can be resumed.",
            code="subscription_not_paused",
        )
    now = billing_now(request, subscription["test_clock"])
    before = copy(subscription)
    anchor = str(request.params.get("billing_cycle_anchor") or "now")
    subscription["status"] = "active"
    hidden = request.account.hidden(subscription["id"])
    hidden["previous_start"] = period_of(subscription)[0]
    if anchor == "unchanged":
        start, end = period_of(subscription)
        recurring = subscription["items"]["data"][0]["price"]["recurring"]
        while end <= now:
            start, end = end, add_interval(end, recurring["interval"], recurring["interval_count"])
        hidden["anchor"], hidden["cycle"] = start, 0
        for item in subscription["items"]["data"]:
            item["current_period_start"], item["current_period_end"] = start, end
    else:
        reset_anchor(request, subscription, now)
    request.emit(
        "customer.subscription.updated", subscription, previous_attributes(before, subscription)
    )
    request.emit("customer.subscription.resumed", subscription)
    collect(request, cycle_invoice(request, subscription, "subscription_update"))
    return subscription


#: Statuses a subscription list leaves out unless asked (``status=all``).
_ENDED = ("canceled", "incomplete_expired")


@includable("customer", "subscriptions")
def _included_subscriptions(account: Account, customer: Obj) -> tuple[list[Obj], str]:
    """``expand[]=subscriptions`` on a customer: its subscriptions that have not ended."""
    found = [
        subscription
        for subscription in account.all(NOUN)
        if subscription["customer"] == customer["id"] and subscription["status"] not in _ENDED
    ]
    return found, f"/v1/customers/{customer['id']}/subscriptions"


def list_subscriptions(request: Request) -> Obj:
    settle(request)
    params = request.params
    status = params.get("status")

    def keep(subscription: Obj) -> bool:
        if params.get("customer") not in (None, subscription["customer"]):
            return False
        if params.get("price") and not any(
            i["price"]["id"] == params["price"] for i in subscription["items"]["data"]
        ):
            return False
        if params.get("test_clock") not in (None, subscription["test_clock"]):
            return False
        if status in (None, ""):
            return subscription["status"] not in _ENDED
        return bool(status == "all" or subscription["status"] == status)

    return list_object(request, request.account.all(NOUN), "/v1/subscriptions", keep)


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/subscriptions", create_subscription),
    Endpoint("POST", "/v1/subscriptions/{id}", update_subscription),
    Endpoint("GET", "/v1/subscriptions/{id}", retrieve_subscription),
    Endpoint("DELETE", "/v1/subscriptions/{id}", cancel_subscription),
    Endpoint("POST", "/v1/subscriptions/{id}/resume", resume_subscription),
    Endpoint("GET", "/v1/subscriptions", list_subscriptions),
)
