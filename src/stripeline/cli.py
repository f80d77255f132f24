"""The ``stripeline`` command."""

from __future__ import annotations

import sys
from typing import Any

import click

from stripeline.errors import ConfigError
from stripeline.settings import Settings, load_settings


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        click.echo(f"stripeline: configuration error: {exc.message}", err=True)
        sys.exit(2)


@click.group()
@click.version_option(package_name="stripeline")
def main() -> None:
    """stripeline: a Stripe integration that is reliable by default."""


@main.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    from stripeline.db import make_engine
    from stripeline.db import migrate as run_migrations

    settings = _settings()
    engine = make_engine(settings.database_url)
    run_migrations(engine)
    engine.dispose()
    click.echo("database is at the newest migration")


def run(argv: list[str] | None = None) -> Any:  # pragma: no cover - thin wrapper
    return main.main(args=argv, standalone_mode=False)


# -- commands defined in their own modules ------------------------------------
# (each registers one click command; keep this list sorted)
