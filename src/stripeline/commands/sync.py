"""``stripeline sync``: bring the inbox (events) and the mirror (objects) up to date."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from stripeline.commands._common import console, database, fail, iso, load_settings_or_exit
from stripeline.db import connect
from stripeline.errors import ConfigError, StripeAPIError

if TYPE_CHECKING:
    from rich.console import Console

    from stripeline.gateway import Reader
    from stripeline.settings import Settings
    from stripeline.sync import BackfillResult, Progress


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
    from stripeline.log import configure_logging
    from stripeline.sync import catch_up
    from stripeline.sync.cursors import read_cursor

    settings = load_settings_or_exit()
    configure_logging(settings.log_format, settings.log_level)
    reader = _reader(settings)
    with database(settings) as engine:
        with connect(engine, readonly=True) as conn:
            saved = read_cursor(conn)
        if since is not None and saved is not None and not as_json:
            click.echo(
                f"note: --since is ignored: catch-up continues from its cursor {saved.event_id}",
                err=True,
            )
        try:
            result = catch_up(engine, reader, mode=settings.effective_mode, since=since)
        except StripeAPIError as exc:
            request = f", request {exc.request_id}" if exc.request_id else ""
            fail(
                f"Stripe: {exc.message} ({type(exc).__name__}{request}); "
                "the events stored before the failure are kept: run it again"
            )
    if as_json:
        click.echo(json.dumps(asdict(result), indent=2))
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


def _reader(settings: Settings) -> Reader:
    """A ``Reader`` for the command: the SDK client and one shared rate limit."""
    from stripeline.gateway import Reader, make_client

    try:
        client = make_client(settings)
    except ConfigError as exc:
        fail(f"configuration error: {exc.message}", code=2)
    return Reader(client, reads_per_second=settings.reads_per_second)


def object_types(names: tuple[str, ...]) -> list[str]:
    """The object types named on the command line (all when none), or exit 2."""
    from stripeline.gateway.reader import resolve_types

    try:
        return resolve_types(names)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@sync.command("objects")
@click.argument("types", nargs=-1, metavar="[TYPES]...")
@click.option(
    "--restart", is_flag=True, help="Start a new run instead of resuming an unfinished one."
)
@click.option(
    "--concurrency",
    default=4,
    show_default=True,
    type=click.IntRange(1, 16),
    help="Types listed at once (they share one rate limit).",
)
@click.option("--json", "as_json", is_flag=True, help="The result as a JSON object.")
def sync_objects(types: tuple[str, ...], restart: bool, concurrency: int, as_json: bool) -> None:
    """Backfill the mirror: list every object of TYPES (default: all) from Stripe.

    Canceled subscriptions, every invoice line and archived products and
    prices included. Resumable: an interrupted run goes on where it stopped
    and does not list again the types it finished. Types: customer,
    payment_method, product, price, subscription, invoice, payment_intent,
    charge, refund, dispute, checkout.session (plural forms accepted).
    """
    import threading

    from stripeline.log import configure_logging
    from stripeline.sync import backfill

    chosen = object_types(types)
    settings = load_settings_or_exit()
    configure_logging(settings.log_format, settings.log_level)
    reader = _reader(settings)
    stop = threading.Event()
    out = console()
    show_progress = not as_json and out.is_terminal
    with database(settings) as engine, _progress(out, chosen, show_progress) as on_page:
        try:
            result = backfill(
                engine,
                reader,
                chosen,
                concurrency=concurrency,
                restart=restart,
                stop=stop,
                on_page=on_page,
                coalesce_seconds=settings.mirror_coalesce_seconds,
            )
        except KeyboardInterrupt:
            stop.set()
            fail("interrupted: run it again to resume where it stopped", code=130)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        _print_backfill(out, result)
    if not result.complete:
        sys.exit(1)


@contextmanager
def _progress(
    out: Console, types: list[str], enabled: bool
) -> Iterator[Callable[[Progress], None] | None]:
    """A rich progress bar per type (objects, rate); None when not enabled."""
    if not enabled:
        yield None
        return
    from rich.progress import Progress as Bar
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Bar(
        SpinnerColumn(finished_text="[green]✓"),
        TextColumn("{task.description:<18}"),
        TextColumn("{task.completed:>9,.0f} objects"),
        TextColumn("{task.fields[rate]:>10}"),
        TimeElapsedColumn(),
        console=out,
    )
    tasks = {t: bar.add_task(t, total=None, rate="") for t in types}
    started = time.monotonic()

    def on_page(progress: Progress) -> None:
        rate = progress.objects / max(1e-3, time.monotonic() - started)
        bar.update(
            tasks[progress.object_type],
            completed=progress.objects,
            rate=f"{rate:,.0f}/s",
            total=progress.objects if progress.finished else None,
        )

    with bar:
        yield on_page


def _print_backfill(out: Console, result: BackfillResult) -> None:
    from rich.table import Table

    table = Table(
        title=f"backfill run {iso(result.run)}" + (" (resumed)" if result.resumed else "")
    )
    for column in ("type", "status", "objects", "pages", "written", "note"):
        table.add_column(
            column, justify="right" if column in ("objects", "pages", "written") else "left"
        )
    for t in result.types.values():
        note = t.error or (f"resumed after {t.resumed_after}" if t.resumed_after else "")
        if t.status == "skipped":
            note = "finished earlier in this run"
        table.add_row(t.object_type, t.status, str(t.objects), str(t.pages), str(t.applied), note)
    out.print(table)
    rate = f", {result.objects / result.seconds:,.0f} objects/s" if result.seconds else ""
    out.print(
        f"{result.objects} object{'s' if result.objects != 1 else ''} in {result.seconds:.1f} s"
        f"{rate}, {result.reads} API reads"
        + (f", {result.rate_limited} rate limited (429)" if result.rate_limited else "")
    )
    if not result.complete:
        out.print("some types did not finish: run it again to resume where they stopped")
