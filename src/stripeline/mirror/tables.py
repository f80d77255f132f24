"""Which table mirrors which Stripe object type.

Every object type has a table: a typed one (with the columns applications
filter on) when registered here, else the generic ``stripeline_objects``.
A typed table has the common ``MirrorColumns`` plus its own; its
``columns(obj)`` function maps a Stripe object to those typed columns and
must be pure and total (missing or unknown fields give None, never an error).
A table may also have an ``after_write(conn, rows)`` hook, called in the same
transaction with the rows just upserted (invoices use it to replace their
lines in ``stripeline_invoice_lines``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table

from stripeline.db.models import StripeObject

ColumnsFn = Callable[[dict[str, Any]], dict[str, Any]]
AfterWriteFn = Callable[[Connection, list[dict[str, Any]]], None]


@dataclass(frozen=True, slots=True)
class MirrorTable:
    """A mirror table and how an object's typed columns are computed."""

    table: Table
    columns: ColumnsFn
    #: Called with the rows just upserted (some may have lost a race on
    #: PostgreSQL: the hook checks what the table holds).
    after_write: AfterWriteFn | None = None


def _generic_columns(obj: dict[str, Any]) -> dict[str, Any]:
    return {"object": obj["object"]}


GENERIC = MirrorTable(cast(Table, StripeObject.__table__), _generic_columns)

#: object type (Stripe's ``object`` field) → its typed table.
TYPED: dict[str, MirrorTable] = {}


def register(
    object_type: str,
    table: Table,
    columns: ColumnsFn,
    *,
    after_write: AfterWriteFn | None = None,
) -> None:
    """Mirror ``object_type`` in ``table`` (called once per type at import)."""
    TYPED[object_type] = MirrorTable(table, columns, after_write)


def table_for(object_type: str) -> MirrorTable:
    return TYPED.get(object_type, GENERIC)


def all_tables() -> list[MirrorTable]:
    """Every mirror table, the generic one first."""
    seen: dict[str, MirrorTable] = {GENERIC.table.name: GENERIC}
    for mirror_table in TYPED.values():
        seen.setdefault(mirror_table.table.name, mirror_table)
    return list(seen.values())
