"""What a database plans for the statements our code sends: capture them as
sent (same SQL, same values), then EXPLAIN each one on the same backend."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event

from stripeline.db import connect


@contextmanager
def sent(engine: Engine, verb: str) -> Iterator[list[tuple[str, Any]]]:
    """The statements starting with ``verb`` sent on ``engine`` inside the
    block, with their values."""
    ran: list[tuple[str, Any]] = []

    def seen(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(verb):
            ran.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield ran
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def explained(engine: Engine, ran: list[tuple[str, Any]]) -> list[str]:
    """The plan of each statement, as sent (same SQL, same values)."""
    explain = "EXPLAIN " if engine.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN "
    plans = []
    with connect(engine, readonly=True) as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        for statement, parameters in ran:
            cursor.execute(explain + statement, parameters)
            plans.append(" | ".join(str(row[-1]) for row in cursor.fetchall()))
    return plans
