"""Invoices and invoice items over the API.

``/v1/invoices``: create (draft; ``pending_invoice_items_behavior``,
``auto_advance``), retrieve, update a draft, delete a draft, list, ``lines``,
``finalize``, ``pay`` (``payment_method``, ``paid_out_of_band``), ``void``,
``mark_uncollectible``. ``/v1/invoiceitems``: create, retrieve, update,
delete, list. How invoices are built and charged is ``_invoicing``.
"""

from __future__ import annotations

from typing import Any

from stripeline_sandbox._billing import settle
from stripeline_sandbox._billing_settings import billing_now, settings_of
from stripeline_sandbox._errors import invalid
from stripeline_sandbox._ids import new_id
from stripeline_sandbox._invoicing import (
    add_item_line,
    attempt_payment,
    finalize,
    include_pending_items,
    mark_paid,
    mark_uncollectible,
    new_invoice,
    recompute,
    void,
)
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._objects import apply_metadata, copy, previous_attributes
from stripeline_sandbox._routes import Call, Endpoint, Request, as_bool, as_int, optional_str
from stripeline_sandbox._state import Obj

NOUN = "invoice"


def _unexpected(invoice: Obj, action: str) -> Exception:
    return invalid(
        f"You can only {action} an invoice with one of these statuses; this invoice is "
        f"{invoice['status']}.",
        code="invoice_not_editable" if action == "edit" else "invoice_unexpected_status",
    )


def create_invoice(request: Request) -> Obj:
    settle(request)
    params = request.params
    customer = request.get("customer", str(request.param("customer")), param="customer")
    collection_method = str(params.get("collection_method") or "charge_automatically")
    if collection_method not in ("charge_automatically", "send_invoice"):
        raise invalid(f"Invalid collection_method: {collection_method}", param="collection_method")
    days = params.get("days_until_due")
    if collection_method == "send_invoice" and days in (None, "") and not params.get("due_date"):
        raise invalid(
            "Invoices with collection_method=send_invoice need days_until_due or due_date.",
            param="days_until_due",
        )
    invoice = new_invoice(
        request,
        customer,
        collection_method=collection_method,
        auto_advance=as_bool(params.get("auto_advance", False), "auto_advance"),
        currency=optional_str(params.get("currency")),
        days_until_due=as_int(days, "days_until_due") if days not in (None, "") else None,
        description=optional_str(params.get("description")),
        metadata=params.get("metadata"),
    )
    if params.get("due_date"):
        invoice["due_date"] = as_int(params["due_date"], "due_date")
    if params.get("default_payment_method"):
        invoice["default_payment_method"] = str(params["default_payment_method"])
    if params.get("pending_invoice_items_behavior") == "include":
        include_pending_items(request, invoice, None)
    request.emit("invoice.created", invoice)
    return invoice


def retrieve_invoice(request: Request) -> Obj:
    settle(request)
    return request.get(NOUN, request.path_params["id"])


def update_invoice(request: Request) -> Obj:
    settle(request)
    invoice = request.get(NOUN, request.path_params["id"])
    params = request.params
    before = copy(invoice)
    if set(params) - {"metadata", "expand", "auto_advance"} and invoice["status"] != "draft":
        raise _unexpected(invoice, "edit")
    if "auto_advance" in params:
        invoice["auto_advance"] = as_bool(params["auto_advance"], "auto_advance")
        if invoice["status"] == "draft":
            invoice["automatically_finalizes_at"] = (
                billing_now(request, invoice["test_clock"])
                + settings_of(request.account).finalize_delay
                if invoice["auto_advance"]
                else None
            )
    for name in ("description", "footer", "statement_descriptor"):
        if name in params:
            invoice[name] = optional_str(params[name])
    if "default_payment_method" in params:
        invoice["default_payment_method"] = optional_str(params["default_payment_method"])
    if "days_until_due" in params:
        invoice["due_date"] = int(invoice["created"]) + 86400 * as_int(
            params["days_until_due"], "days_until_due"
        )
    invoice["metadata"] = apply_metadata(invoice["metadata"], params.get("metadata"))
    changed = previous_attributes(before, invoice)
    if changed:
        request.emit("invoice.updated", invoice, changed)
    return invoice


def delete_invoice(request: Request) -> Obj:
    invoice = request.get(NOUN, request.path_params["id"])
    if invoice["status"] != "draft":
        raise invalid("You can only delete draft invoices.", code="invoice_not_editable")
    for line in invoice["lines"]["data"]:
        item_id = (line["parent"].get("invoice_item_details") or {}).get("invoice_item") or (
            line["parent"].get("subscription_item_details") or {}
        ).get("invoice_item")
        item = request.account.objects.get(item_id or "")
        if item is not None:
            item["invoice"] = None
    request.emit("invoice.deleted", invoice)
    invoice["deleted"] = True
    return {"id": invoice["id"], "object": NOUN, "deleted": True}


def list_invoices(request: Request) -> Obj:
    settle(request)
    params = request.params

    def keep(invoice: Obj) -> bool:
        sub = ((invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription")
        return (
            not invoice.get("deleted")
            and params.get("customer") in (None, invoice["customer"])
            and params.get("status") in (None, invoice["status"])
            and params.get("subscription") in (None, sub)
            and params.get("collection_method") in (None, invoice["collection_method"])
        )

    page = list_object(request, request.account.all(NOUN), "/v1/invoices", keep)
    page["data"] = [_first_lines(invoice) for invoice in page["data"]]
    return page


#: Lines an invoice shows in a list; the rest are paged from /v1/invoices/{id}/lines.
LISTED_LINES = 10


def _first_lines(invoice: Obj) -> Obj:
    """The invoice as lists show it: its first ``LISTED_LINES`` lines, ``has_more``."""
    lines = invoice["lines"]["data"]
    if len(lines) <= LISTED_LINES:
        return invoice
    shown = {**invoice["lines"], "data": lines[:LISTED_LINES], "has_more": True}
    shown["url"] = f"/v1/invoices/{invoice['id']}/lines"
    return {**invoice, "lines": shown}


def list_invoice_lines(request: Request) -> Obj:
    invoice = request.get(NOUN, request.path_params["id"])
    return list_object(
        request, list(invoice["lines"]["data"]), f"/v1/invoices/{invoice['id']}/lines"
    )


def finalize_invoice(request: Request) -> Obj:
    settle(request)
    invoice = request.get(NOUN, request.path_params["id"])
    if invoice["status"] != "draft":
        raise invalid(
            "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
            code="invoice_unexpected_status",
        )
    if "auto_advance" in request.params:
        invoice["auto_advance"] = as_bool(request.params["auto_advance"], "auto_advance")
    finalize(request, invoice)
    if (
        invoice["auto_advance"]
        and invoice["status"] == "open"
        and invoice["collection_method"] == "charge_automatically"
    ):
        attempt_payment(request, invoice)
    return invoice


def pay_invoice(request: Request) -> Obj:
    settle(request)
    invoice = request.get(NOUN, request.path_params["id"])
    params = request.params
    if invoice["status"] == "draft":
        finalize(request, invoice)
    if invoice["status"] == "paid":
        raise invalid("Invoice is already paid.", code="invoice_already_paid")
    if invoice["status"] not in ("open", "uncollectible"):
        raise invalid(
            f"You cannot pay an invoice with status {invoice['status']}.",
            code="invoice_unexpected_status",
        )
    if as_bool(params.get("paid_out_of_band", False), "paid_out_of_band"):
        mark_paid(request, invoice, out_of_band=True)
        return invoice
    reference = optional_str(params.get("payment_method"))
    error = attempt_payment(
        request,
        invoice,
        payment_method=reference,
        off_session=as_bool(params.get("off_session", True), "off_session"),
    )
    if error is not None:
        error.save_idempotent = True
        raise error
    return invoice


def void_invoice(request: Request) -> Obj:
    settle(request)
    invoice = request.get(NOUN, request.path_params["id"])
    if invoice["status"] not in ("open", "uncollectible"):
        raise _unexpected(invoice, "void")
    void(request, invoice)
    return invoice


def mark_invoice_uncollectible(request: Request) -> Obj:
    settle(request)
    invoice = request.get(NOUN, request.path_params["id"])
    if invoice["status"] != "open":
        raise _unexpected(invoice, "mark uncollectible")
    mark_uncollectible(request, invoice)
    return invoice


# -- invoice items -------------------------------------------------------------------


def create_invoice_item(request: Request) -> Obj:
    settle(request)
    params = request.params
    customer = request.get("customer", str(request.param("customer")), param="customer")
    price: Obj | None = None
    quantity = as_int(params.get("quantity", 1), "quantity", minimum=0)
    pricing = params.get("pricing") if isinstance(params.get("pricing"), dict) else {}
    price_id = params.get("price") or (pricing or {}).get("price")
    if price_id:
        price = request.get("price", str(price_id), param="pricing[price]")
        amount = int(price["unit_amount"]) * quantity
        currency = str(price["currency"])
    else:
        amount = as_int(request.param("amount"), "amount")
        currency = str(request.param("currency")).lower()
    now = billing_now(request, customer["test_clock"])
    period = params.get("period") if isinstance(params.get("period"), dict) else None
    subscription_id = optional_str(params.get("subscription"))
    if subscription_id:
        request.get("subscription", subscription_id, param="subscription")
    item: Obj = {
        "id": new_id("ii"),
        "object": "invoiceitem",
        "amount": amount,
        "currency": currency,
        "customer": customer["id"],
        "customer_account": None,
        "date": now,
        "description": optional_str(params.get("description")),
        "discountable": True,
        "discounts": [],
        "invoice": None,
        "livemode": False,
        "metadata": apply_metadata({}, params.get("metadata")),
        "net_amount": amount,
        "parent": (
            {
                "subscription_details": {"subscription": subscription_id},
                "type": "subscription_details",
            }
            if subscription_id
            else None
        ),
        "period": {
            "start": as_int(period["start"], "period[start]") if period else now,
            "end": as_int(period["end"], "period[end]") if period else now,
        },
        "pricing": {
            "price_details": (
                {"price": price["id"], "product": price["product"]} if price else None
            ),
            "type": "price_details",
            "unit_amount_decimal": str(price["unit_amount"] if price else amount),
        },
        "proration": False,
        "proration_details": {"discount_amounts": []},
        "quantity": quantity,
        "quantity_decimal": str(quantity),
        "tax_rates": [],
        "test_clock": customer["test_clock"],
    }
    request.account.add(item)
    if params.get("invoice"):
        invoice = request.get(NOUN, str(params["invoice"]), param="invoice")
        if invoice["status"] != "draft":
            raise invalid("You can only add invoice items to draft invoices.", param="invoice")
        add_item_line(request, invoice, item)
    request.emit("invoiceitem.created", item)
    return item


def retrieve_invoice_item(request: Request) -> Obj:
    return _item(request)


def _item(request: Request) -> Obj:
    return request.get("invoiceitem", request.path_params["id"], "invoice item")


def _editable(call: Call, item: Obj) -> Obj | None:
    invoice = call.account.objects.get(item["invoice"] or "")
    if invoice is not None and invoice["status"] != "draft":
        raise invalid(
            "This invoice item is on a finalized invoice and cannot be changed.",
            code="invoice_not_editable",
        )
    return invoice


def update_invoice_item(request: Request) -> Obj:
    item = _item(request)
    params: dict[str, Any] = request.params
    invoice = _editable(request, item)
    before = copy(item)
    if "amount" in params:
        item["amount"] = item["net_amount"] = as_int(params["amount"], "amount")
    if "description" in params:
        item["description"] = optional_str(params["description"])
    item["metadata"] = apply_metadata(item["metadata"], params.get("metadata"))
    if invoice is not None:
        for line in invoice["lines"]["data"]:
            details = line["parent"].get("invoice_item_details") or {}
            if details.get("invoice_item") == item["id"]:
                line["amount"] = line["subtotal"] = item["amount"]
                line["description"] = item["description"]
        recompute(invoice)
    request.emit("invoiceitem.updated", item, previous_attributes(before, item))
    return item


def delete_invoice_item(request: Request) -> Obj:
    item = _item(request)
    invoice = _editable(request, item)
    if invoice is not None:
        invoice["lines"]["data"] = [
            line
            for line in invoice["lines"]["data"]
            if (line["parent"].get("invoice_item_details") or {}).get("invoice_item") != item["id"]
        ]
        recompute(invoice)
    request.emit("invoiceitem.deleted", item)
    item["deleted"] = True
    return {"id": item["id"], "object": "invoiceitem", "deleted": True}


def list_invoice_items(request: Request) -> Obj:
    params = request.params
    pending = params.get("pending")

    def keep(item: Obj) -> bool:
        return (
            not item.get("deleted")
            and params.get("customer") in (None, item["customer"])
            and params.get("invoice") in (None, item["invoice"])
            and (pending is None or (item["invoice"] is None) == as_bool(pending, "pending"))
        )

    return list_object(request, request.account.all("invoiceitem"), "/v1/invoiceitems", keep)


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/invoices", create_invoice),
    Endpoint("GET", "/v1/invoices/{id}", retrieve_invoice),
    Endpoint("POST", "/v1/invoices/{id}", update_invoice),
    Endpoint("DELETE", "/v1/invoices/{id}", delete_invoice),
    Endpoint("GET", "/v1/invoices", list_invoices),
    Endpoint("GET", "/v1/invoices/{id}/lines", list_invoice_lines),
    Endpoint("POST", "/v1/invoices/{id}/finalize", finalize_invoice),
    Endpoint("POST", "/v1/invoices/{id}/pay", pay_invoice),
    Endpoint("POST", "/v1/invoices/{id}/void", void_invoice),
    Endpoint("POST", "/v1/invoices/{id}/mark_uncollectible", mark_invoice_uncollectible),
    Endpoint("POST", "/v1/invoiceitems", create_invoice_item),
    Endpoint("GET", "/v1/invoiceitems/{id}", retrieve_invoice_item),
    Endpoint("POST", "/v1/invoiceitems/{id}", update_invoice_item),
    Endpoint("DELETE", "/v1/invoiceitems/{id}", delete_invoice_item),
    Endpoint("GET", "/v1/invoiceitems", list_invoice_items),
)
