"""Coupons, promotion codes, and the discounts they give subscriptions.

A coupon takes ``percent_off`` or ``amount_off`` (with ``currency``) for
``duration`` ``once`` (the subscription's first invoice), ``repeating``
(``duration_in_months``) or ``forever``, limited by ``max_redemptions`` and
``redeem_by``. A promotion code is a customer-facing ``code`` for a coupon
(``promotion[coupon]``, or ``coupon`` of older API versions), with its own
``max_redemptions``, ``expires_at``, ``customer`` and ``active``. A
subscription created with ``discounts[][coupon|promotion_code]`` (or
``coupon`` / ``promotion_code``) carries a ``discount`` object; each of its
invoices is discounted while the discount lasts (``total_discount_amounts``;
proration lines are not discountable).
"""

from __future__ import annotations

from typing import Any

from stripeline_sandbox._billing_settings import billing_now
from stripeline_sandbox._errors import invalid
from stripeline_sandbox._ids import new_id, random_part
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._objects import apply_metadata, copy, previous_attributes
from stripeline_sandbox._routes import Call, Endpoint, Request, as_bool, as_int, optional_str
from stripeline_sandbox._state import Obj

DURATIONS = ("once", "repeating", "forever")
#: Months, for a ``repeating`` coupon's end (Stripe counts calendar months).
_MONTH = 30 * 86400


def create_coupon(request: Request) -> Obj:
    params = request.params
    percent_off = params.get("percent_off")
    amount_off = params.get("amount_off")
    if (percent_off in (None, "")) == (amount_off in (None, "")):
        raise invalid("A coupon takes exactly one of percent_off and amount_off.")
    currency = optional_str(params.get("currency"))
    if amount_off not in (None, "") and not currency:
        raise invalid("Missing required param: currency.", param="currency")
    duration = str(params.get("duration") or "once")
    if duration not in DURATIONS:
        raise invalid(f"Invalid duration: {duration}", param="duration")
    months = params.get("duration_in_months")
    if duration == "repeating" and months in (None, ""):
        raise invalid("Missing required param: duration_in_months.", param="duration_in_months")
    coupon_id = optional_str(params.get("id")) or random_part(8)
    if coupon_id in request.account.objects:
        raise invalid("Coupon already exists.", param="id", code="resource_already_exists")
    percent = None if percent_off in (None, "") else float(percent_off)
    if percent is not None and not 0 < percent <= 100:
        raise invalid("percent_off must be between 0 and 100.", param="percent_off")
    coupon: Obj = {
        "id": coupon_id,
        "object": "coupon",
        "amount_off": None if amount_off in (None, "") else as_int(amount_off, "amount_off"),
        "created": request.now(),
        "currency": currency.lower() if currency else None,
        "duration": duration,
        "duration_in_months": (
            as_int(months, "duration_in_months", minimum=1) if duration == "repeating" else None
        ),
        "livemode": False,
        "max_redemptions": (
            as_int(params["max_redemptions"], "max_redemptions", minimum=1)
            if params.get("max_redemptions")
            else None
        ),
        "metadata": apply_metadata({}, params.get("metadata")),
        "name": optional_str(params.get("name")),
        "percent_off": percent,
        "redeem_by": as_int(params["redeem_by"], "redeem_by") if params.get("redeem_by") else None,
        "times_redeemed": 0,
        "valid": True,
    }
    request.account.add(coupon)
    request.emit("coupon.created", coupon)
    return coupon


def retrieve_coupon(request: Request) -> Obj:
    return request.get("coupon", request.path_params["id"])


def update_coupon(request: Request) -> Obj:
    coupon = request.get("coupon", request.path_params["id"])
    before = copy(coupon)
    if "name" in request.params:
        coupon["name"] = optional_str(request.params["name"])
    coupon["metadata"] = apply_metadata(coupon["metadata"], request.params.get("metadata"))
    changed = previous_attributes(before, coupon)
    if changed:
        request.emit("coupon.updated", coupon, changed)
    return coupon


def delete_coupon(request: Request) -> Obj:
    coupon = request.get("coupon", request.path_params["id"])
    coupon["valid"] = False
    request.account.remove(coupon["id"])
    request.emit("coupon.deleted", coupon)
    return {"id": coupon["id"], "object": "coupon", "deleted": True}


def list_coupons(request: Request) -> Obj:
    return list_object(request, request.account.all("coupon"), "/v1/coupons")


def _coupon_of_code_params(request: Request) -> Obj:
    params = request.params
    promotion = params.get("promotion")
    given = (promotion or {}).get("coupon") if isinstance(promotion, dict) else None
    given = given or params.get("coupon")
    if not given:
        raise invalid("Missing required param: promotion[coupon].", param="promotion[coupon]")
    return request.get("coupon", str(given), param="promotion[coupon]")


def create_promotion_code(request: Request) -> Obj:
    params = request.params
    coupon = _coupon_of_code_params(request)
    code = optional_str(params.get("code")) or random_part(8).upper()
    for other in request.account.all("promotion_code"):
        if other["code"].lower() == code.lower() and other["active"]:
            raise invalid("An active promotion code with this code exists.", param="code")
    customer = optional_str(params.get("customer"))
    if customer:
        request.get("customer", customer, param="customer")
    promotion_code: Obj = {
        "id": new_id("promo"),
        "object": "promotion_code",
        "active": as_bool(params.get("active", True), "active"),
        "code": code,
        "coupon": copy(coupon),
        "created": request.now(),
        "customer": customer,
        "expires_at": as_int(params["expires_at"], "expires_at")
        if params.get("expires_at")
        else None,
        "livemode": False,
        "max_redemptions": (
            as_int(params["max_redemptions"], "max_redemptions", minimum=1)
            if params.get("max_redemptions")
            else None
        ),
        "metadata": apply_metadata({}, params.get("metadata")),
        "promotion": {"coupon": coupon["id"], "type": "coupon"},
        "restrictions": {
            "first_time_transaction": False,
            "minimum_amount": None,
            "minimum_amount_currency": None,
        },
        "times_redeemed": 0,
    }
    request.account.add(promotion_code)
    request.emit("promotion_code.created", promotion_code)
    return promotion_code


def retrieve_promotion_code(request: Request) -> Obj:
    return request.get("promotion_code", request.path_params["id"])


def update_promotion_code(request: Request) -> Obj:
    promotion_code = request.get("promotion_code", request.path_params["id"])
    before = copy(promotion_code)
    if "active" in request.params:
        promotion_code["active"] = as_bool(request.params["active"], "active")
    promotion_code["metadata"] = apply_metadata(
        promotion_code["metadata"], request.params.get("metadata")
    )
    changed = previous_attributes(before, promotion_code)
    if changed:
        request.emit("promotion_code.updated", promotion_code, changed)
    return promotion_code


def list_promotion_codes(request: Request) -> Obj:
    params = request.params

    def keep(found: Obj) -> bool:
        return all(
            [
                params.get("code") in (None, found["code"]),
                params.get("coupon") in (None, found["coupon"]["id"]),
                params.get("active") in (None, str(found["active"]).lower(), found["active"]),
            ]
        )

    return list_object(request, request.account.all("promotion_code"), "/v1/promotion_codes", keep)


# -- discounts on subscriptions -------------------------------------------------


def _redeemable_coupon(call: Call, coupon: Obj, now: int, param: str) -> None:
    if not coupon["valid"] or (coupon["redeem_by"] is not None and now > coupon["redeem_by"]):
        raise invalid(f"Coupon {coupon['id']} is no longer valid.", param=param)
    limit = coupon["max_redemptions"]
    if limit is not None and coupon["times_redeemed"] >= limit:
        raise invalid(f"Coupon {coupon['id']} has been fully redeemed.", param=param)


def take_discounts(call: Call, subscription: Obj, params: dict[str, Any]) -> None:
    """Redeem the coupon or promotion code of a new subscription's parameters
    and attach its discount (``subscription["discounts"]``).

    Raises:
        StripeError: 400 for an unknown, used up or expired coupon or code.
    """
    given = params.get("discounts")
    entries: list[dict[str, Any]] = (
        [e for e in given if isinstance(e, dict)] if isinstance(given, list) else []
    )
    if params.get("coupon"):
        entries.append({"coupon": params["coupon"]})
    if params.get("promotion_code"):
        entries.append({"promotion_code": params["promotion_code"]})
    if len(entries) > 1:
        raise invalid("The sandbox applies one discount per subscription.", param="discounts")
    if not entries:
        return
    entry = entries[0]
    now = billing_now(call, subscription["test_clock"])
    promotion_code: Obj | None = None
    if entry.get("promotion_code"):
        param = "discounts[0][promotion_code]"
        promotion_code = call.get("promotion_code", str(entry["promotion_code"]), param=param)
        expired = promotion_code["expires_at"] is not None and now > promotion_code["expires_at"]
        used = (
            promotion_code["max_redemptions"] is not None
            and promotion_code["times_redeemed"] >= promotion_code["max_redemptions"]
        )
        other = promotion_code["customer"] not in (None, subscription["customer"])
        if not promotion_code["active"] or expired or used or other:
            raise invalid(
                f"This promotion code cannot be redeemed: {promotion_code['code']}.", param=param
            )
        coupon = call.get("coupon", promotion_code["coupon"]["id"], param=param)
    else:
        param = "discounts[0][coupon]"
        coupon = call.get("coupon", str(entry.get("coupon")), param=param)
    _redeemable_coupon(call, coupon, now, param)
    if coupon["currency"] and coupon["currency"] != subscription["currency"]:
        raise invalid("The coupon's currency is not the subscription's.", param=param)
    coupon["times_redeemed"] += 1
    if promotion_code is not None:
        promotion_code["times_redeemed"] += 1
    months = coupon["duration_in_months"]
    discount: Obj = {
        "id": new_id("di"),
        "object": "discount",
        "checkout_session": None,
        "customer": subscription["customer"],
        "end": now + int(months) * _MONTH if months else None,
        "invoice": None,
        "invoice_item": None,
        "promotion_code": promotion_code["id"] if promotion_code else None,
        "source": {"coupon": coupon["id"], "type": "coupon"},
        "start": now,
        "subscription": subscription["id"],
        "subscription_item": None,
    }
    call.account.add(discount)
    subscription["discounts"] = [discount["id"]]


def apply_discounts(call: Call, invoice: Obj, subscription: Obj, *, consume: bool = True) -> None:
    """Discount a subscription's invoice while its discount lasts (``consume``:
    a ``once`` coupon is then used up; not for a preview)."""
    from stripeline_sandbox._invoicing import recompute

    for discount_id in subscription.get("discounts") or []:
        discount = call.account.find("discount", discount_id)
        if discount is None:
            continue
        coupon_id = discount["source"]["coupon"]
        coupon = call.account.objects.get(coupon_id) or {}
        hidden = call.account.hidden(discount_id)
        if coupon.get("duration") == "once" and hidden.get("used"):
            continue
        if discount["end"] is not None and int(invoice["created"]) >= int(discount["end"]):
            continue
        base = sum(int(line["amount"]) for line in invoice["lines"]["data"] if line["discountable"])
        if base <= 0:
            continue
        if coupon.get("percent_off") is not None:
            amount = round(base * float(coupon["percent_off"]) / 100)
        else:
            amount = min(base, int(coupon.get("amount_off") or 0))
        if consume:
            hidden["used"] = True
        invoice["discounts"] = [discount_id]
        invoice["total_discount_amounts"] = [{"amount": amount, "discount": discount_id}]
        recompute(invoice)


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/coupons", create_coupon),
    Endpoint("GET", "/v1/coupons", list_coupons),
    Endpoint("GET", "/v1/coupons/{id}", retrieve_coupon),
    Endpoint("POST", "/v1/coupons/{id}", update_coupon),
    Endpoint("DELETE", "/v1/coupons/{id}", delete_coupon),
    Endpoint("POST", "/v1/promotion_codes", create_promotion_code),
    Endpoint("GET", "/v1/promotion_codes", list_promotion_codes),
    Endpoint("GET", "/v1/promotion_codes/{id}", retrieve_promotion_code),
    Endpoint("POST", "/v1/promotion_codes/{id}", update_promotion_code),
)
