"""Statements run on the driver (``exec_driver_sql``): the worker's hot path.

The SQL is written once per backend; parameters are passed as the driver
takes them, without SQLAlchemy's per-row bind processing (most of the
worker's time on a batch was spent there). Errors are still SQLAlchemy's
(``DBAPIError``, with the driver's error and its SQLSTATE), so callers tell
a deadlock or a lost connection apart as before. Values are written as
SQLAlchemy writes them through the models' types: on SQLite a UTC time is
the text ``YYYY-MM-DD HH:MM:SS.ffffff`` (``UTCDateTime``), on PostgreSQL an
aware datetime; a JSON column takes compact JSON text.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Connection, String, Table
from sqlalchemy.dialects import postgresql

from stripeline import _json
from stripeline.db.models import UTCDateTime


def is_sqlite(conn: Connection) -> bool:
    return conn.dialect.name == "sqlite"


def stamp(conn: Connection, value: datetime | None) -> Any:
    """``value`` (aware) as the driver takes it for a ``UTCDateTime`` column."""
    return _sqlite_stamp(value) if conn.dialect.name == "sqlite" else _aware(value)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value


#: The last time written on SQLite and its text (a batch writes one ``now``
#: into every row).
_last_stamp: tuple[datetime | None, str | None] = (None, None)


def _sqlite_stamp(value: datetime | None) -> str | None:
    global _last_stamp
    if value is None:
        return None
    last, text = _last_stamp
    if value is last:
        return text
    utc = value if value.tzinfo is UTC else _aware(value).astimezone(UTC)  # type: ignore[union-attr]
    # ``YYYY-MM-DD HH:MM:SS.ffffff`` (microseconds always written).
    text = utc.replace(tzinfo=None).isoformat(" ", "microseconds")
    _last_stamp = (value, text)
    return text


def marks(conn: Connection, count: int) -> str:
    """``count`` parameter marks, comma-separated."""
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    return ", ".join([mark] * count)


def in_list(conn: Connection, column: str, count: int) -> str:
    """``column IN (…)`` for ``count`` values: one array parameter on
    PostgreSQL (``= ANY``: one statement text whatever the count, prepared
    once; sent in binary, so the driver escapes nothing), ``count`` marks on
    SQLite."""
    if conn.dialect.name == "sqlite":
        return f"{column} IN ({marks(conn, count)})"
    return f"{column} = ANY(%b)"


def in_params(conn: Connection, values: list[Any]) -> list[Any]:
    """The parameters of ``in_list`` for ``values``."""
    return list(values) if conn.dialect.name == "sqlite" else [list(values)]


Converter = Callable[[Any], Any]


def _json_text(value: Any) -> str | None:
    return None if value is None else _json.dumps(value)


def _converter(sqlite: bool, column_type: Any) -> tuple[Converter | None, str]:
    """How a value is passed for a column of ``column_type``, and its mark."""
    mark = "?" if sqlite else "%s"
    if isinstance(column_type, UTCDateTime):
        return (_sqlite_stamp if sqlite else _aware), mark
    if isinstance(column_type, JSON):
        return _json_text, (mark if sqlite else "CAST(%s AS jsonb)")
    return None, mark


#: Most parameters in one SQLite statement (``SQLITE_MAX_VARIABLE_NUMBER``:
#: 32,766 since SQLite 3.32, 999 before); PostgreSQL takes 65,535.
MAX_PARAMETERS = {
    "sqlite": 32_000 if sqlite3.sqlite_version_info >= (3, 32) else 999,
    "postgresql": 60_000,
}


class RowWriter:
    """A table's columns, in order, with how each value is passed.

    SQLite: ``source(n)`` is a multi-row ``VALUES`` clause of ``n`` rows and
    ``params(rows)`` its flat parameters. PostgreSQL: ``source(n)`` reads
    the rows from one JSON document (``jsonb_to_recordset``), whatever
    ``n``, and ``params(rows)`` is that document: one statement text, parsed
    by the driver once and prepared once by the server (thousands of
    parameter marks took longer to split than to run, and arrays of JSON
    text longer to escape)."""

    def __init__(self, dialect: str, table: Table) -> None:
        self.sqlite = dialect == "sqlite"
        self.columns = [column.name for column in table.columns]
        converters = [_converter(self.sqlite, column.type) for column in table.columns]
        #: The columns whose values are converted, by position (SQLite).
        self._converted = [
            (index, converter)
            for index, (converter, _) in enumerate(converters)
            if converter is not None
        ]
        self._row = "(" + ", ".join(mark for _, mark in converters) + ")"
        if self.sqlite:
            #: Most rows in one statement.
            self.chunk = max(1, MAX_PARAMETERS["sqlite"] // len(self.columns))
            self._unnest = ""
        else:
            self.chunk = 1_000_000
            # Names and types of our own columns: nothing from outside the code.
            record = ", ".join(
                f"{column.name} {_record_type(column.type)}" for column in table.columns
            )
            self._unnest = f"SELECT * FROM jsonb_to_recordset(CAST(%s AS jsonb)) AS r({record})"  # noqa: S608

    def source(self, count: int) -> str:
        """The rows' source in ``INSERT INTO t (columns) <source>``."""
        if self.sqlite:
            return "VALUES " + ", ".join([self._row] * count)
        return self._unnest

    def params(self, rows: list[dict[str, Any]]) -> list[Any]:
        """The parameters of ``source(len(rows))``: each row's value of each
        column (None where a row has no value)."""
        if self.sqlite:
            columns = self.columns
            converted = self._converted
            flat: list[Any] = []
            for row in rows:
                values = [row.get(name) for name in columns]
                for index, convert in converted:
                    values[index] = convert(values[index])
                flat += values
            return flat
        # ``jsonb_to_recordset`` reads each column's key (NULL when missing)
        # and ignores any other: the rows go as they are.
        return [_json.dumps_rows(rows)]


_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


def _record_type(column_type: Any) -> str:
    """A column's type in ``jsonb_to_recordset``'s record. Strings are read as
    ``TEXT`` (the insert into the column refuses one too long, as a plain
    insert does)."""
    if isinstance(column_type, JSON):
        return "JSONB"
    if isinstance(column_type, String):
        return "TEXT"
    return str(column_type.compile(_PG))
