"""``stripeline events``: look at the inbox and act on its events."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import click
from rich.table import Table

from stripeline import inbox, ops, retention
from stripeline.commands._common import (
    console,
    database,
    fail,
    iso,
    limit_option,
    load_settings_or_exit,
)
from stripeline.db import connect
from stripeline.errors import RetentionTooShort
from stripeline.mirror import refetch

#: Statuses ``events retry`` acts on.
RETRYABLE = ("failed", "dead")
_STATUS_STYLE = {
    "pending": "cyan",
    "processing": "blue",
    "processed": "green",
    "failed": "yellow",
    "dead": "bold red",
    "ignored": "dim",
}


def _status(status: str) -> str:
    style = _STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/]" if style else status


@click.group()
def events() -> None:
    """Look at the inbox and act on its events."""


@events.command("list")
@click.option("--status", type=click.Choice(inbox.STATUSES), help="Only events in this status.")
@click.option("--type", "event_type", metavar="TYPE", help="An event type, or a prefix: invoice.*")
@limit_option
@click.option("--json", "as_json", is_flag=True, help="A JSON array, for scripts.")
def list_events(status: str | None, event_type: str | None, limit: int, as_json: bool) -> None:
    """List events, newest received first."""
    settings = load_settings_or_exit()
    with database(settings) as engine, connect(engine, readonly=True) as conn:
        rows = ops.list_events(conn, status=status, type=event_type, limit=limit)
    if as_json:
        click.echo(json.dumps([ops.as_json(row) for row in rows], indent=2))
        return
    out = console()
    if not rows:
        out.print("no events match")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("id", "type", "status", "attempts", "deliveries", "source", "created", "received"):
        table.add_column(name, no_wrap=name in ("id", "type"))
    for row in rows:
        table.add_row(
            row.id,
            row.type,
            _status(row.status),
            str(row.attempts),
            str(row.deliveries),
            row.source,
            iso(row.created),
            iso(row.received_at),
        )
    out.print(table)
    if len(rows) == limit:
        out.print(f"[dim]showing the newest {limit}; use --limit for more[/]")


def _payload(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


@events.command()
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
def show(event_id: str, as_json: bool) -> None:
    """Show one event: its state, payload, deliveries, attempts and last error."""
    settings = load_settings_or_exit()
    with database(settings) as engine, connect(engine, readonly=True) as conn:
        detail = ops.get_event(conn, event_id)
    if detail is None:
        fail(f"no event {event_id} in the inbox")
    summary = detail.summary
    if as_json:
        doc = {
            **ops.as_json(summary),
            "processed_at": ops.jsonable(detail.processed_at),
            "last_traceback": detail.last_traceback,
            "payload": _payload(detail.payload),
            "delivery_log": ops.jsonable(detail.deliveries),
            "attempt_log": ops.jsonable(detail.attempts),
        }
        click.echo(json.dumps(doc, indent=2))
        return
    out = console()
    out.print(f"[bold]{summary.id}[/]  {summary.type}  {_status(summary.status)}")
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    facts.add_row("created", iso(summary.created))
    facts.add_row("received", iso(summary.received_at))
    facts.add_row("source", summary.source)
    facts.add_row("account", summary.account or "(platform)")
    facts.add_row("livemode", str(summary.livemode).lower())
    facts.add_row("attempts", str(summary.attempts))
    facts.add_row("deliveries", str(summary.deliveries))
    if summary.next_attempt_at is not None:
        label = "lease until" if summary.status == "processing" else "next attempt"
        facts.add_row(label, iso(summary.next_attempt_at))
    if detail.processed_at is not None:
        facts.add_row("processed", iso(detail.processed_at))
    out.print(facts)
    if summary.last_error:
        out.print("\n[bold red]last error[/]")
        out.print(summary.last_error, markup=False)
    if detail.last_traceback:
        out.print("\n[bold]traceback[/]")
        out.print(detail.last_traceback, markup=False)
    out.print("\n[bold]deliveries[/]")
    deliveries = Table(box=None, header_style="dim", pad_edge=False)
    for name in ("#", "received", "source", "signed at"):
        deliveries.add_column(name)
    for number, delivery in enumerate(detail.deliveries, start=1):
        signed = delivery.get("signed_at")
        deliveries.add_row(
            str(number),
            iso(delivery["received_at"]),
            str(delivery["source"]),
            iso(int(signed)) if signed is not None else "",
        )
    out.print(deliveries)
    out.print("\n[bold]attempts[/]")
    if not detail.attempts and summary.status == "processed":
        # The worker logs no row for a first attempt applied in bulk.
        out.print("processed on its first attempt, in bulk (no handler): no row logged")
    elif not detail.attempts:
        out.print("none yet")
    else:
        attempts = Table(box=None, header_style="dim", pad_edge=False)
        for name in ("#", "worker", "started", "finished", "outcome", "error"):
            attempts.add_column(name)
        for attempt in detail.attempts:
            attempts.add_row(
                str(attempt["number"]),
                str(attempt["worker"]),
                iso(attempt["started_at"]),
                iso(attempt["finished_at"]),
                _status(str(attempt["outcome"])),
                (attempt["error"] or "").splitlines()[0] if attempt["error"] else "",
            )
        out.print(attempts)
    out.print("\n[bold]payload[/]")
    payload = _payload(detail.payload)
    if isinstance(payload, str):
        out.print(payload, markup=False)
    else:
        out.print_json(data=payload)


@events.command()
@click.argument("event_id", required=False)
@click.option("--dead", is_flag=True, help="Every dead event.")
def retry(event_id: str | None, dead: bool) -> None:
    """Process a failed or dead event again now, with a fresh attempt budget."""
    if (event_id is None) == (not dead):
        raise click.UsageError("give one EVENT_ID or --dead")
    settings = load_settings_or_exit()
    with database(settings) as engine, connect(engine) as conn:
        if event_id is None:
            count = inbox.retry(conn, dead=True)
            click.echo(f"{count} dead event{'s' if count != 1 else ''} scheduled for a new attempt")
            return
        detail = ops.get_event(conn, event_id)
        if detail is None:
            fail(f"no event {event_id} in the inbox")
        status = detail.summary.status
        if status not in RETRYABLE:
            fail(
                f"{event_id} is {status}: only failed or dead events are retried "
                f"(`stripeline events replay {event_id}` processes any event again)"
            )
        inbox.retry(conn, event_id=event_id)
    click.echo(f"{event_id} scheduled for a new attempt (was {status})")


@events.command()
@click.argument("event_id")
def replay(event_id: str) -> None:
    """Process an event again, whatever its status (handlers run again)."""
    settings = load_settings_or_exit()
    with database(settings) as engine, connect(engine) as conn:
        detail = ops.get_event(conn, event_id)
        if detail is None:
            fail(f"no event {event_id} in the inbox")
        if detail.summary.status == "processing" or not inbox.replay(conn, event_id):
            fail(f"{event_id} is being processed by a worker right now; try again when it is done")
    click.echo(f"{event_id} will be processed again (was {detail.summary.status})")


@events.command()
@click.option("--gave-up", "gave_up", is_flag=True, help="Only the reads given up for good.")
@limit_option
@click.option("--json", "as_json", is_flag=True, help="A JSON array, for scripts.")
def refetches(gave_up: bool, limit: int, as_json: bool) -> None:
    """The mirror's re-fetch queue: objects to read again from Stripe, and
    the reads given up because Stripe refused them for good."""
    settings = load_settings_or_exit()
    with database(settings) as engine, connect(engine, readonly=True) as conn:
        waiting = refetch.pending(conn)
        given_up = refetch.given_up(conn)
        rows = ops.list_refetches(conn, gave_up=True if gave_up else None, limit=limit)
    if as_json:
        click.echo(json.dumps([ops.as_json(row) for row in rows], indent=2))
        return
    out = console()
    out.print(f"{waiting} waiting, {given_up} given up")
    if not rows:
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("id", "type", "account", "state", "attempts", "due", "last error"):
        table.add_column(name, no_wrap=name == "id")
    for row in rows:
        table.add_row(
            row.id,
            row.object_type,
            row.account or "(platform)",
            "[bold red]given up[/]" if row.gave_up_at is not None else "waiting",
            str(row.attempts),
            "" if row.gave_up_at is not None else iso(row.due_at),
            (row.last_error or "").splitlines()[0] if row.last_error else "",
        )
    out.print(table)


@events.command()
@click.option(
    "--older-than",
    "older_than",
    metavar="AGE",
    help="Remove events last delivered longer ago than this: 90d, 2w, 240h (at least 7 days). "
    "Default: STRIPELINE_INBOX_RETENTION_DAYS.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be removed; remove nothing.")
def prune(older_than: str | None, dry_run: bool) -> None:
    """Remove processed (and ignored) events past the retention, with their
    deliveries and attempts; pending, failed and dead events are never removed."""
    settings = load_settings_or_exit()
    if older_than is not None:
        try:
            age = retention.parse_age(older_than)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--older-than") from None
    elif settings.inbox_retention_days is not None:
        age = timedelta(days=settings.inbox_retention_days)
    else:
        raise click.UsageError(
            "give --older-than (e.g. 90d) or set STRIPELINE_INBOX_RETENTION_DAYS"
        )
    try:
        retention.check_age(age)
    except RetentionTooShort as exc:
        fail(f"--older-than {older_than or age.days}: {exc.message}", 2)
    with database(settings) as engine:
        result = retention.prune(engine, age, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{verb} {result.events} event{'s' if result.events != 1 else ''} last delivered before "
        f"{result.before.isoformat(timespec='seconds')} ({result.deliveries} deliveries, "
        f"{result.attempts} attempts)"
    )
