"""The invoice preview (``POST /v1/invoices/create_preview``): what the next
invoice of a subscription would be, with a change applied, changing nothing.

Given ``subscription`` and ``subscription_details`` (``items`` as on a
subscription update, ``proration_behavior``, ``proration_date``), the
preview holds the prorations the change would make (the same amounts, by the
same rounding, as the update then bills), the subscription's pending invoice
items and, unless ``always_invoice`` (an invoice made at once), the next
period at the new prices. ``parent.subscription_details.subscription_proration_date``
says the moment prorated: pass it to the update to bill exactly what was
previewed. Given ``customer`` and ``subscription_details[items]`` without a
subscription, the preview is a new subscription's first invoice. Nothing is
stored: the preview's id starts ``upcoming_in_``. A change of billing
interval is not previewed here.
"""

from __future__ import annotations

from typing import Any

from stripeline_sandbox._billing import add_interval, period_of, product_name, settle
from stripeline_sandbox._billing_settings import billing_now
from stripeline_sandbox._coupons import apply_discounts
from stripeline_sandbox._errors import invalid
from stripeline_sandbox._invoicing import new_invoice, new_line
from stripeline_sandbox._meters import metered, usage_of
from stripeline_sandbox._prorations import Change, prorations
from stripeline_sandbox._routes import Call, Endpoint, Request, as_bool, as_int
from stripeline_sandbox._state import Obj

BEHAVIORS = ("create_prorations", "always_invoice", "none")


def _details(params: dict[str, Any]) -> dict[str, Any]:
    details = params.get("subscription_details")
    details = dict(details) if isinstance(details, dict) else {}
    # The names of API versions before subscription_details.
    for old, new in (
        ("subscription_items", "items"),
        ("subscription_proration_behavior", "proration_behavior"),
        ("subscription_proration_date", "proration_date"),
    ):
        if old in params and new not in details:
            details[new] = params[old]
    return details


def _price(call: Call, given: Any, param: str) -> Obj:
    price = call.get("price", str(given), param=param)
    if price["recurring"] is None:
        raise invalid(f"The price specified ({price['id']}) is not recurring.", param=param)
    return price


def _changes(call: Call, subscription: Obj, given: Any) -> tuple[list[Change], list[Obj]]:
    """The item changes asked, and the items (as they would be) afterwards."""
    if given in (None, ""):
        given = []
    if not isinstance(given, list) or not all(isinstance(e, dict) for e in given):
        raise invalid("Invalid array", param="subscription_details[items]")
    after = {item["id"]: dict(item) for item in subscription["items"]["data"]}
    changes: list[Change] = []
    for n, entry in enumerate(given):
        param = f"subscription_details[items][{n}]"
        item_id = entry.get("id")
        if item_id:
            item = after.get(str(item_id))
            if item is None:
                raise invalid(f"No such subscription item: '{item_id}'", param=f"{param}[id]")
            old_price, old_quantity = item["price"], int(item["quantity"])
            if as_bool(entry.get("deleted", False), "deleted"):
                del after[item["id"]]
                changes.append((item, old_price, old_quantity, None, 0))
                continue
            price = (
                _price(call, entry["price"], f"{param}[price]") if entry.get("price") else old_price
            )
            quantity = as_int(entry.get("quantity", old_quantity), f"{param}[quantity]", minimum=0)
            item.update(price=price, quantity=quantity)
            if price["id"] != old_price["id"] or quantity != old_quantity:
                changes.append((item, old_price, old_quantity, price, quantity))
        else:
            price = _price(call, entry.get("price"), f"{param}[price]")
            quantity = as_int(entry.get("quantity", 1), f"{param}[quantity]", minimum=0)
            item = {"id": None, "price": price, "quantity": quantity}
            after[f"new{n}"] = item
            changes.append((item, None, 0, price, quantity))
    if not after:
        raise invalid(
            "A subscription must keep at least one item.", param="subscription_details[items]"
        )
    intervals = {
        (i["price"]["recurring"]["interval"], i["price"]["recurring"]["interval_count"])
        for i in [*after.values(), *subscription["items"]["data"]]
    }
    if len(intervals) > 1:
        raise invalid(
            "The sandbox does not preview a change of billing interval.",
            param="subscription_details[items]",
        )
    return changes, list(after.values())


def _period_lines(
    call: Call,
    invoice: Obj,
    subscription: Obj | None,
    customer_id: str,
    items: list[Obj],
    period: tuple[int, int],
    usage_since: int | None,
) -> None:
    for item in items:
        price, quantity = item["price"], int(item["quantity"])
        name = product_name(call, price)
        if metered(price):
            used = 0
            if usage_since is not None:
                used = usage_of(call, price, customer_id, usage_since, period[0])
            new_line(
                invoice,
                amount=int(price["unit_amount"]) * used,
                description=f"{used} × {name} (usage)",
                period=(usage_since or period[0], period[0]),
                quantity=used,
                price=price,
                subscription_id=subscription["id"] if subscription else None,
                subscription_item_id=item.get("id"),
            )
            continue
        new_line(
            invoice,
            amount=int(price["unit_amount"]) * quantity,
            description=f"{quantity} × {name}",
            period=period,
            quantity=quantity,
            price=price,
            subscription_id=subscription["id"] if subscription else None,
            subscription_item_id=item.get("id"),
        )


def _preview_invoice(call: Call, customer: Obj, subscription: Obj | None) -> Obj:
    """A draft invoice that is not stored (no event, no id in the account)."""
    invoice = new_invoice(
        call,
        customer,
        subscription=subscription,
        billing_reason="upcoming",
        collection_method=(subscription or {}).get("collection_method", "charge_automatically"),
        currency=(subscription or {}).get("currency"),
    )
    call.account.remove(invoice["id"])
    invoice["id"] = "upcoming_" + invoice["id"]
    invoice["lines"]["url"] = f"/v1/invoices/{invoice['id']}/lines"
    invoice["payments"]["url"] = f"/v1/invoice_payments?invoice={invoice['id']}"
    return invoice


def create_preview(request: Request) -> Obj:
    settle(request)
    params = request.params
    details = _details(params)
    behavior = str(details.get("proration_behavior") or "create_prorations")
    if behavior not in BEHAVIORS:
        raise invalid(
            f"Invalid proration_behavior: {behavior}",
            param="subscription_details[proration_behavior]",
        )
    sub_id = params.get("subscription")
    if not sub_id:
        return _new_subscription_preview(request, params, details)
    subscription = request.get("subscription", str(sub_id), param="subscription")
    if params.get("customer") not in (None, "", subscription["customer"]):
        raise invalid("The subscription is not the customer's.", param="customer")
    customer = request.account.objects[subscription["customer"]]
    now = billing_now(request, subscription["test_clock"])
    start, end = period_of(subscription)
    moment = (
        as_int(details["proration_date"], "subscription_details[proration_date]")
        if details.get("proration_date")
        else now
    )
    if not start <= moment <= end:
        raise invalid(
            "proration_date must be within the current period.",
            param="subscription_details[proration_date]",
        )
    changes, items = _changes(request, subscription, details.get("items"))
    invoice = _preview_invoice(request, customer, subscription)
    for item in reversed(request.account.all("invoiceitem")):
        parent = (item.get("parent") or {}).get("subscription_details") or {}
        if item.get("deleted") or item["invoice"] is not None:
            continue
        if parent.get("subscription") != subscription["id"]:
            continue
        new_line(
            invoice,
            amount=int(item["amount"]),
            description=str(item["description"] or ""),
            period=(int(item["period"]["start"]), int(item["period"]["end"])),
            quantity=item["quantity"],
            price=None,
            subscription_id=subscription["id"],
            invoice_item_id=item["id"],
            proration=bool(item["proration"]),
        )
    trialing = subscription["status"] == "trialing"
    if changes and not trialing and behavior != "none":
        for item, price, quantity, amount, description, period in prorations(
            request, subscription, changes, moment
        ):
            new_line(
                invoice,
                amount=amount,
                description=description,
                period=period,
                quantity=quantity,
                price=price,
                subscription_id=subscription["id"],
                subscription_item_id=item.get("id"),
                proration=True,
            )
    if behavior == "always_invoice" and changes and not trialing:
        invoice["period_start"] = invoice["period_end"] = moment
    else:
        recurring = items[0]["price"]["recurring"]
        next_end = add_interval(end, recurring["interval"], int(recurring["interval_count"]))
        trial_end = subscription["trial_end"]
        since = max(start, int(trial_end)) if trial_end else start
        _period_lines(request, invoice, subscription, customer["id"], items, (end, next_end), since)
        invoice["period_start"], invoice["period_end"] = start, end
        invoice["next_payment_attempt"] = end
        apply_discounts(request, invoice, subscription, consume=False)
    invoice["parent"]["subscription_details"]["subscription_proration_date"] = moment
    return invoice


def _new_subscription_preview(
    request: Request, params: dict[str, Any], details: dict[str, Any]
) -> Obj:
    customer = request.get("customer", str(params.get("customer") or ""), param="customer")
    given = details.get("items")
    if not isinstance(given, list) or not given:
        raise invalid(
            "Missing required param: subscription_details[items].",
            param="subscription_details[items]",
        )
    items: list[dict[str, Any]] = [
        {
            "id": None,
            "price": _price(request, e.get("price"), f"subscription_details[items][{n}][price]"),
            "quantity": as_int(e.get("quantity", 1), "quantity", minimum=0),
        }
        for n, e in enumerate(given)
        if isinstance(e, dict)
    ]
    now = billing_now(request, customer["test_clock"])
    recurring = items[0]["price"]["recurring"]
    end = add_interval(now, recurring["interval"], int(recurring["interval_count"]))
    invoice = _preview_invoice(request, customer, None)
    invoice["currency"] = items[0]["price"]["currency"]
    _period_lines(request, invoice, None, customer["id"], items, (now, end), None)
    invoice["period_start"] = invoice["period_end"] = now
    return invoice


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (Endpoint("POST", "/v1/invoices/create_preview", create_preview),)
