"""Invoice lines and subscription items: copied from each state of their
parent (invoice, subscription) that the mirror writes.

Invoice lines travel inside their invoice (``invoice.lines``), so they follow its
ordering: when a newer state of an invoice is written, its lines replace the
ones held, in the same transaction. A state whose ``lines`` list is cut short
(``has_more``) cannot say which of the held lines are gone: its lines are
written over those with the same id and the others are kept, and the
invoice's ``lines_complete`` column is False until a complete list is
written (``replace_invoice_lines``, e.g. by a backfill that pages
``/v1/invoices/{id}/lines``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, insert, select, tuple_

from stripeline.db.models import InvoiceLine, SubscriptionItem
from stripeline.mirror.mapping import invoice_line_columns, subscription_item_columns

invoice_lines = cast(Table, InvoiceLine.__table__)
#: Keys per ``IN (…)`` list.
_CHUNK = 500


def _line_rows(
    account: str, invoice_id: str, livemode: bool, lines: Sequence[Any], now: datetime
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for position, line in enumerate(lines):
        line_id = line.get("id") if isinstance(line, dict) else None
        if not isinstance(line_id, str) or not line_id or line_id in seen or len(line_id) > 255:
            continue
        seen.add(line_id)
        rows.append(
            {
                "account": account,
                "invoice": invoice_id,
                "id": line_id,
                "position": position,
                "livemode": livemode,
                "data": line,
                "updated_at": now,
                **invoice_line_columns(line),
            }
        )
    return rows


def replace_invoice_lines(
    conn: Connection,
    *,
    account: str,
    invoice_id: str,
    livemode: bool,
    lines: Sequence[Any],
    complete: bool,
    now: datetime,
) -> None:
    """Write one invoice's lines: all of them (``complete``) or some of them."""
    rows = _line_rows(account, invoice_id, livemode, lines, now)
    scope = delete(invoice_lines).where(
        invoice_lines.c.account == account, invoice_lines.c.invoice == invoice_id
    )
    if not complete:
        scope = scope.where(invoice_lines.c.id.in_([row["id"] for row in rows]))
    conn.execute(scope)
    if rows:
        conn.execute(insert(invoice_lines), rows)


def write_invoice_lines(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """The ``after_write`` hook of the invoice table (see the module doc).

    ``rows`` are the states this transaction has just written (``apply_states``
    passes only those its guarded upsert or its compare-and-set wrote: a state
    a racing worker's newer one kept out is not among them). Their rows are
    locked by that write, so nobody else rewrites their lines before this
    transaction ends: no need to read them back.
    """
    if not rows:
        return
    replaced: list[tuple[str, str]] = []  # invoices whose lines are all replaced
    overwritten: list[tuple[str, str, str]] = []  # single lines written over
    line_rows: list[dict[str, Any]] = []
    for row in rows:
        key = (row["account"], row["id"])
        lines = row["data"].get("lines")
        if row["deleted"]:
            items: list[Any] = []
            complete = True
        elif isinstance(lines, dict) and isinstance(lines.get("data"), list):
            items = lines["data"]
            complete = lines.get("has_more") is not True
        elif isinstance(lines, list):
            items = lines
            complete = True
        else:
            continue  # this state says nothing about the lines: keep them
        new = _line_rows(row["account"], row["id"], row["livemode"], items, row["updated_at"])
        line_rows.extend(new)
        if complete:
            replaced.append(key)
        else:
            overwritten.extend((r["account"], r["invoice"], r["id"]) for r in new)
    c = invoice_lines.c
    for account, invoice_ids in sorted(_by_account(sorted(replaced)).items()):
        for start in range(0, len(invoice_ids), _CHUNK):
            chunk = invoice_ids[start : start + _CHUNK]
            conn.execute(delete(invoice_lines).where(c.account == account, c.invoice.in_(chunk)))
    overwritten.sort()
    for start in range(0, len(overwritten), _CHUNK):
        chunk3 = overwritten[start : start + _CHUNK]
        conn.execute(delete(invoice_lines).where(tuple_(c.account, c.invoice, c.id).in_(chunk3)))
    if line_rows:
        # One lock order for every transaction (see ``mirror._store``).
        line_rows.sort(key=lambda r: (r["account"], r["invoice"], r["id"]))
        conn.execute(insert(invoice_lines), line_rows)


# -- subscription items ---------------------------------------------------------------
# Items have no events of their own either: they travel in ``subscription.items``.
# Each subscription state written gives its items a state with the
# subscription's marker and rank, written through the mirror's guarded upsert
# (so a fetched item state that is newer is kept); with a complete list, items
# the subscription no longer lists are marked deleted.

_items = cast(Table, SubscriptionItem.__table__)


def _item_row(
    row: dict[str, Any], item: dict[str, Any], subscription_id: str, deleted: bool
) -> dict[str, Any]:
    columns = subscription_item_columns(item)
    if columns["subscription"] is None:
        columns["subscription"] = subscription_id
    return {
        "account": row["account"],
        "id": item["id"],
        "livemode": row["livemode"],
        "data": item,
        "marker": row["marker"],
        "marker_rank": row["marker_rank"],
        "event_id": row["event_id"],
        "deleted": deleted,
        "updated_at": row["updated_at"],
        **columns,
    }


def write_subscription_items(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """The ``after_write`` hook of the subscription table (see above);
    ``rows`` are states this transaction has just written
    (``write_invoice_lines``)."""
    from stripeline.mirror._store import _upsert

    item_rows: dict[tuple[str, str], dict[str, Any]] = {}
    #: (account, subscription) → (its row, the item ids it lists), for complete lists.
    complete: dict[tuple[str, str], tuple[dict[str, Any], set[str]]] = {}
    for row in rows:
        key = (row["account"], row["id"])
        listed = row["data"].get("items")
        if not isinstance(listed, dict) or not isinstance(listed.get("data"), list):
            continue
        seen: set[str] = set()
        for item in listed["data"]:
            if (
                isinstance(item, dict)
                and isinstance(item.get("id"), str)
                and len(item["id"]) <= 255
            ):
                seen.add(item["id"])
                item_rows.setdefault(
                    (row["account"], item["id"]), _item_row(row, item, row["id"], False)
                )
        if listed.get("has_more") is not True:
            complete[key] = (row, seen)
    for account, subscription_ids in _by_account(list(complete)).items():
        for start in range(0, len(subscription_ids), _CHUNK):
            held_items = conn.execute(
                select(_items.c.subscription, _items.c.id).where(
                    _items.c.account == account,
                    _items.c.subscription.in_(subscription_ids[start : start + _CHUNK]),
                    _items.c.deleted.is_(False),
                )
            )
            for subscription_id, item_id in held_items:
                row, seen = complete[(account, subscription_id)]
                if item_id not in seen:
                    stub = {"id": item_id, "object": "subscription_item", "deleted": True}
                    item_rows[(account, item_id)] = _item_row(row, stub, subscription_id, True)
    if item_rows:
        # One lock order for every transaction (see ``mirror._store``).
        _upsert(conn, _items, [item_rows[key] for key in sorted(item_rows)])


def _by_account(keys: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """Keys grouped by account: ``account = ? AND x IN (…)`` uses the index on
    every backend (a row-value IN does not always)."""
    grouped: dict[str, list[str]] = {}
    for account, value in keys:
        grouped.setdefault(account, []).append(value)
    return grouped
