"""``stripeline sync``: bring the inbox up to date with Stripe."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from stripeline.commands._common import database, fail, iso, load_settings_or_exit
from stripeline.db import connect
from stripeline.errors import ConfigError, StripeAPIError


def parse_since(value: str) -> int:
    """Unix seconds, or an ISO 8601 date/time (UTC when it has no offset).

    Raises:
        click.BadParameter: neither.
    """
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither Unix seconds nor an ISO date/time (2026-11-01T00:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


class _Since(click.ParamType):  # type: ignore[type-arg]
    name = "ISO-or-unix"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_since(str(value))
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


@click.group()
def sync() -> None:
    """Bring the inbox up to date with Stripe."""


@sync.command("events")
@click.option(
    "--since",
    type=_Since(),
    help="First run only: start at this time (Unix seconds or ISO 8601, UTC by default) "
    "instead of the oldest event Stripe keeps (30 days).",
)
@click.option("--json", "as_json", is_flag=True, help="The result as a JSON object.")
def sync_events(since: int | None, as_json: bool) -> None:
    """List /v1/events after the saved cursor and store what the inbox lacks."""
    from stripeline.gateway import make_client
    from stripeline.log import configure_logging
    from stripeline.sync import catch_up, read_cursor

    settings = load_settings_or_exit()
    configure_logging(settings.log_format, settings.log_level)
    try:
        client = make_client(settings)
    except ConfigError as exc:
        fail(f"configuration error: {exc.message}", code=2)
    with database(settings) as engine:
        with connect(engine, readonly=True) as conn:
            saved = read_cursor(conn)
        if since is not None and saved is not None and not as_json:
            click.echo(
                f"note: --since is ignored: catch-up continues from its cursor {saved.event_id}",
                err=True,
            )
        try:
            result = catch_up(engine, client, mode=settings.effective_mode, since=since)
        except StripeAPIError as exc:
            request = f", request {exc.request_id}" if exc.request_id else ""
            fail(
                f"Stripe: {exc.message} ({type(exc).__name__}{request}); "
                "the events stored before the failure are kept: run it again"
            )
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    if result.skipped:
        click.echo("another process is catching up right now; nothing done")
        return
    ignored = f" ({result.ignored} of the other mode, stored as ignored)" if result.ignored else ""
    click.echo(
        f"caught up: {result.inserted} new event{'s' if result.inserted != 1 else ''} stored"
        f"{ignored}, {result.seen} listed in {result.pages} page{'s' if result.pages != 1 else ''}"
    )
    if result.cursor:
        click.echo(f"cursor: {result.cursor} (created {iso(result.cursor_created)})")
    if result.cursor_was_old:
        click.echo(
            "warning: the cursor was more than 25 days old; Stripe keeps events 30 days, "
            "so run catch-up more often (stripeline serve does it in the background)",
            err=True,
        )
