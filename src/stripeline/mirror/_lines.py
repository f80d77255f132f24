"""Invoice lines: copied from each invoice state the mirror writes.

Lines travel inside their invoice (``invoice.lines``), so they follow its
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

from stripeline.db.models import Invoice, InvoiceLine
from stripeline.mirror.mapping import invoice_line_columns

invoice_lines = cast(Table, InvoiceLine.__table__)
_invoices = cast(Table, Invoice.__table__)
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

    Only invoices whose row now holds the state just written get their lines
    rewritten: on PostgreSQL a racing worker may have written a newer state
    first (the guarded upsert then left it alone). The upsert locked those
    rows, so nobody else rewrites their lines before this transaction ends.
    """
    if not rows:
        return
    keys = [(row["account"], row["id"]) for row in rows]
    held: dict[tuple[str, str], tuple[int, int, str | None]] = {}
    for start in range(0, len(keys), _CHUNK):
        found = conn.execute(
            select(
                _invoices.c.account,
                _invoices.c.id,
                _invoices.c.marker,
                _invoices.c.marker_rank,
                _invoices.c.event_id,
            ).where(tuple_(_invoices.c.account, _invoices.c.id).in_(keys[start : start + _CHUNK]))
        )
        for account, object_id, marker, marker_rank, event_id in found:
            held[(account, object_id)] = (marker, marker_rank, event_id)
    replaced: list[tuple[str, str]] = []  # invoices whose lines are all replaced
    overwritten: list[tuple[str, str, str]] = []  # single lines written over
    line_rows: list[dict[str, Any]] = []
    for row in rows:
        key = (row["account"], row["id"])
        if held.get(key) != (row["marker"], row["marker_rank"], row["event_id"]):
            continue
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
    for start in range(0, len(replaced), _CHUNK):
        chunk = replaced[start : start + _CHUNK]
        conn.execute(delete(invoice_lines).where(tuple_(c.account, c.invoice).in_(chunk)))
    for start in range(0, len(overwritten), _CHUNK):
        chunk3 = overwritten[start : start + _CHUNK]
        conn.execute(delete(invoice_lines).where(tuple_(c.account, c.invoice, c.id).in_(chunk3)))
    if line_rows:
        conn.execute(insert(invoice_lines), line_rows)
