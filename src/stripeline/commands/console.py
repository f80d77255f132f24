"""``stripeline console``: what setting up the operator console needs."""

from __future__ import annotations

import secrets

import click


@click.group()
def console() -> None:
    """The operator console (docs/console.md)."""


@console.command("hash-password")
@click.option("--user", required=True, help="The user name (letters, digits and _.@+-).")
@click.option(
    "--role",
    type=click.Choice(["admin", "read"]),
    default="read",
    show_default=True,
    help="admin acts (retry, replay); read only looks.",
)
@click.password_option(help="Asked for, twice, when not given (never echoed).")
def hash_password(user: str, role: str, password: str) -> None:
    """Print one STRIPELINE_CONSOLE_USERS entry: name:role:argon2-hash."""
    from stripeline.settings import parse_console_users
    from stripeline.web.console import hash_password as make_hash

    entry = f"{user}:{role}:{make_hash(password)}"
    try:
        parse_console_users(entry)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(entry)


@console.command("secret")
def secret() -> None:
    """Print a fresh random value for STRIPELINE_CONSOLE_SECRET."""
    click.echo(secrets.token_urlsafe(48))
