"""What the operator commands share: the database, clear failures, output."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import NoReturn

import click
from rich.console import Console
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from stripeline.db import migrations_current
from stripeline.db.engine import null_pool_engine
from stripeline.errors import ConfigError
from stripeline.settings import Settings, load_settings


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``stripeline: <message>`` on stderr and exit with ``code``."""
    click.echo(f"stripeline: {message}", err=True)
    sys.exit(code)


#: Width of tables when the output is not a terminal (a pipe, a file, a test).
PIPE_WIDTH = 160


def console() -> Console:
    """A rich console on the stdout of the moment (tests capture it); when that
    is not a terminal, wide enough that event ids and types are not wrapped."""
    out = Console(highlight=False)
    return out if out.is_terminal else Console(highlight=False, width=PIPE_WIDTH)


def short_error(exc: BaseException) -> str:
    """One line about a database error, without its SQL or parameters."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return f"{type(orig).__name__}: {text[:300]}"


#: What to do about a database behind the code.
MIGRATE_HINT = "the database schema is not current: run `stripeline migrate`"


def schema_is_current(engine: Engine, *, code: int = 1) -> bool:
    """Whether the schema is at the newest migration; a clear message and
    exit ``code`` when the database cannot be reached."""
    try:
        return migrations_current(engine)
    except SQLAlchemyError as exc:
        fail(f"database unreachable: {short_error(exc)}", code)


def require_current_schema(engine: Engine, *, code: int = 1) -> None:
    """Exit ``code`` with ``MIGRATE_HINT`` unless the schema is current (the
    one check every command that uses the database makes)."""
    if not schema_is_current(engine, code=code):
        fail(MIGRATE_HINT, code)


@contextmanager
def database(settings: Settings, *, check_migrations: bool = True) -> Iterator[Engine]:
    """An engine for one command; a clear message and exit 1 when the
    database cannot be reached or is not migrated."""
    engine = null_pool_engine(settings.database_url)
    try:
        if check_migrations:
            require_current_schema(engine)
        else:
            schema_is_current(engine)
        try:
            yield engine
        except SQLAlchemyError as exc:
            fail(f"database error: {short_error(exc)}")
    finally:
        engine.dispose()


def iso(value: datetime | int | None) -> str:
    """A UTC time for people: ``2026-11-26 21:46:34Z`` (empty for None)."""
    if value is None:
        return ""
    if isinstance(value, int):
        value = datetime.fromtimestamp(value, UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def load_settings_or_exit(load: Callable[[], Settings] = load_settings) -> Settings:
    """The settings (``load()``: from the environment, or an application's),
    or one configuration error line and exit 2 (as every command)."""
    try:
        return load()
    except ConfigError as exc:
        click.echo(f"stripeline: configuration error: {exc.message}", err=True)
        sys.exit(2)


#: ``--limit N`` of the listing commands (``events list``, ``mirror list`` …).
limit_option = click.option(
    "--limit",
    type=click.IntRange(1, 100_000),
    default=50,
    show_default=True,
    help="At most this many.",
)
