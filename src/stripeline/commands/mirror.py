"""``stripeline mirror``: read the local mirror of Stripe objects."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import click
from rich.table import Table

from stripeline.commands._common import (
    console,
    database,
    fail,
    iso,
    limit_option,
    load_settings_or_exit,
)
from stripeline.mirror import Mirror, MirrorRecord, to_major
from stripeline.mirror.mapping import TYPED_TABLES

#: What ``mirror list`` accepts besides Stripe's own names (``checkout.session``).
ALIASES = {
    "customers": "customer",
    "payment_methods": "payment_method",
    "payment_intents": "payment_intent",
    "charges": "charge",
    "refunds": "refund",
    "products": "product",
    "prices": "price",
    "subscriptions": "subscription",
    "subscription_items": "subscription_item",
    "invoices": "invoice",
    "disputes": "dispute",
    "checkout_sessions": "checkout.session",
    "checkout_session": "checkout.session",
}
#: Columns shown by ``mirror list`` (those a record has, in this order).
_SHOWN = ("id", "status", "customer", "email", "amount", "due_by", "current_period_end", "created")
_AMOUNTS = ("amount", "amount_total", "amount_due", "unit_amount")


def _object_type(name: str) -> str:
    return ALIASES.get(name.lower(), name.lower())


def _list(
    mirror: Mirror, object_type: str, customer: str | None, status: str | None, limit: int
) -> list[MirrorRecord]:
    filters: dict[str, Any] = {"limit": limit}
    if status is not None:
        filters["status"] = status
    if object_type == "customer":
        if status is not None or customer is not None:
            raise click.UsageError("customers are not filtered by customer or status")
        return list(mirror.customers(limit=limit))
    if object_type in ("product", "price"):
        if customer or status:
            raise click.UsageError(f"{object_type}s are not filtered by customer or status")
        return list(
            mirror.products(limit=limit) if object_type == "product" else mirror.prices(limit=limit)
        )
    if object_type in ("refund", "dispute"):
        if customer is not None:
            raise click.UsageError(f"{object_type}s are not filtered by customer")
        return list(
            mirror.refunds(**filters) if object_type == "refund" else mirror.disputes(**filters)
        )
    if object_type == "payment_method":
        if customer is None or status is not None:
            raise click.UsageError("payment methods are listed per --customer, without --status")
        return list(mirror.payment_methods(customer, limit=limit))
    if object_type == "subscription_item":
        raise click.UsageError("subscription items are in their subscription: mirror get SUB_ID")
    methods: dict[str, Callable[..., Sequence[MirrorRecord]]] = {
        "payment_intent": mirror.payment_intents,
        "charge": mirror.charges,
        "subscription": mirror.subscriptions,
        "invoice": mirror.invoices,
        "checkout.session": mirror.checkout_sessions,
    }
    method = methods[object_type]
    return list(method(customer, **filters))


def _amount(record: MirrorRecord) -> str:
    for name in _AMOUNTS:
        value = getattr(record, name, None)
        currency = getattr(record, "currency", None)
        if isinstance(value, int):
            if isinstance(currency, str):
                return f"{to_major(value, currency)} {currency.upper()}"
            return str(value)
    return ""


def _cell(record: MirrorRecord, name: str) -> str:
    if name == "amount":
        return _amount(record)
    value = getattr(record, name, None)
    if isinstance(value, datetime):
        return iso(value)
    return "" if value is None else str(value)


@click.group()
def mirror() -> None:
    """Read the local mirror of Stripe objects (never calls Stripe)."""


@mirror.command()
@click.argument("object_id")
@click.option("--account", help="A connected account's object (default: the platform's).")
@click.option("--json", "as_json", is_flag=True, help="Only the object's JSON, for scripts.")
def get(object_id: str, account: str | None, as_json: bool) -> None:
    """Print one mirrored object as Stripe's JSON (exit 1 when not mirrored)."""
    settings = load_settings_or_exit()
    with database(settings) as engine:
        data = Mirror(engine, account=account).get(object_id)
    if data is None:
        fail(f"no object {object_id} in the mirror")
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    out = console()
    deleted = "  [bold red]deleted[/]" if data.get("deleted") is True else ""
    out.print(f"[bold]{object_id}[/]  {data.get('object', '')}{deleted}")
    out.print_json(data=data)


@mirror.command("list")
@click.argument("object_type", metavar="TYPE")
@click.option("--customer", help="Only this customer's objects.")
@click.option("--status", help="Only objects in this status.")
@click.option("--account", help="A connected account's objects (default: the platform's).")
@limit_option
@click.option("--json", "as_json", is_flag=True, help="A JSON array of the objects, for scripts.")
def list_objects(
    object_type: str,
    customer: str | None,
    status: str | None,
    account: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List mirrored objects of TYPE, newest first (deleted ones left out).

    TYPE is a Stripe object type (subscription, checkout.session, coupon…) or
    a plural (subscriptions); types without a typed table take no filters.
    """
    object_type = _object_type(object_type)
    settings = load_settings_or_exit()
    with database(settings) as engine:
        reader = Mirror(engine, account=account)
        if object_type in TYPED_TABLES:
            records = _list(reader, object_type, customer, status, limit)
            objects = [record.data for record in records]
        else:
            if customer or status:
                raise click.UsageError(f"{object_type} has no typed table: no --customer/--status")
            records = []
            objects = reader.objects(object_type, limit=limit)
    if as_json:
        click.echo(json.dumps(objects, indent=2, sort_keys=True))
        return
    out = console()
    if not objects:
        out.print(f"no {object_type} objects match")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    if records:
        names = {field.name for field in dataclasses.fields(records[0])}
        has_amount = any(name in names for name in _AMOUNTS)
        shown = [n for n in _SHOWN if n in names or (n == "amount" and has_amount)]
        for name in shown:
            table.add_column(name, no_wrap=name == "id")
        for record in records:
            table.add_row(*(_cell(record, name) for name in shown))
    else:
        table.add_column("id", no_wrap=True)
        table.add_column("created")
        for obj in objects:
            created = obj.get("created")
            table.add_row(str(obj.get("id")), iso(created) if isinstance(created, int) else "")
    out.print(table)
    if len(objects) == limit:
        out.print(f"[dim]showing the newest {limit}; use --limit for more[/]")
