"""``stripeline disputes``: deadlines, the details of one dispute, evidence."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from stripeline.app import Stripeline
from stripeline.commands._common import (
    console,
    database,
    fail,
    iso,
    limit_option,
    load_settings_or_exit,
)
from stripeline.errors import StripelineError
from stripeline.flows.disputes import DisputeCase, Disputes
from stripeline.inbox import utcnow
from stripeline.mirror import to_major

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([wdhm])\s*$")
_UNITS = {"w": timedelta(weeks=1), "d": timedelta(days=1), "h": timedelta(hours=1)}


def parse_duration(text: str) -> timedelta:
    """``7d``, ``72h``, ``90m``, ``2w`` as a timedelta.

    Raises:
        click.BadParameter: not one of those.
    """
    match = _DURATION.match(text)
    if match is None:
        raise click.BadParameter(f"{text!r}: a number and a unit, e.g. 7d, 72h, 90m")
    number, unit = float(match[1]), match[2]
    return number * _UNITS.get(unit, timedelta(minutes=1))


def relative(when: datetime | None, now: datetime) -> str:
    """``in 2 days``, ``in 5 hours``, ``3 hours ago`` (empty for None)."""
    if when is None:
        return ""
    seconds = (when - now).total_seconds()
    left = abs(seconds)
    units = ((86400, "day"), (3600, "hour"), (60, "minute"))
    size, unit = next(((s, n) for s, n in units if left >= s), (0, ""))
    if not size:
        return "now"
    count = int(left // size)
    text = f"{count} {unit}{'' if count == 1 else 's'}"
    return f"in {text}" if seconds > 0 else f"{text} ago"


def local(when: datetime | None) -> str:
    """A time in the machine's zone: ``2026-12-04 23:59 CET`` (empty for None)."""
    return "" if when is None else when.astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _money(amount: int | None, currency: str | None) -> str:
    if amount is None:
        return ""
    return f"{to_major(amount, currency or 'usd')} {(currency or '').upper()}".strip()


def _as_json(case: DisputeCase, now: datetime) -> dict[str, Any]:
    return {
        "id": case.id,
        "account": case.account or None,
        "status": case.status,
        "reason": case.reason,
        "amount": case.amount,
        "currency": case.currency,
        "due_by": case.due_by.isoformat() if case.due_by else None,
        "due_in_seconds": int(d.total_seconds()) if (d := case.due_in(now)) is not None else None,
        "charge": case.charge,
        "payment_intent": case.payment_intent,
        "customer": case.customer,
        "order_id": case.order_id,
        "early_fraud_warnings": list(case.early_fraud_warnings),
        "has_evidence": case.has_evidence,
        "submission_count": case.submission_count,
        "evidence_fields": sorted(case.evidence),
        "outcome": case.outcome,
        "funds": {
            "withdrawn": case.funds.withdrawn,
            "withdrawn_fee": case.funds.withdrawn_fee,
            "reinstated": case.funds.reinstated,
            "reinstated_fee": case.funds.reinstated_fee,
            "net": case.funds.net,
        },
    }


def _disputes(engine: Any, settings: Any) -> Disputes:
    return Disputes(Stripeline(settings, engine=engine))


@click.group()
def disputes() -> None:
    """Disputes: what is due, one dispute's details, submitting evidence."""


@disputes.command("due")
@click.option(
    "--within",
    default="7d",
    show_default=True,
    help="Evidence due within this long: 7d, 72h, 90m.",
)
@click.option("--account", help="A connected account (acct_…); the platform's by default.")
@limit_option
@click.option("--json", "as_json", is_flag=True, help="A JSON array, for scripts.")
def due(within: str, account: str | None, limit: int, as_json: bool) -> None:
    """Open disputes whose evidence is due soon, soonest first."""
    window = parse_duration(within)
    settings = load_settings_or_exit()
    now = utcnow()
    with database(settings) as engine:
        found = _disputes(engine, settings).due(window, now=now, account=account, limit=limit)
    if as_json:
        click.echo(json.dumps([_as_json(case, now) for case in found], indent=2))
        return
    out = console()
    if not found:
        out.print(f"no open dispute is due within {within}")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("id", "status", "amount", "reason", "due", "due by (local)", "order", "charge"):
        table.add_column(name, no_wrap=name in ("id", "charge"))
    for case in found:
        left = case.due_in(now)
        when = relative(case.due_by, now)
        table.add_row(
            case.id,
            case.status,
            _money(case.amount, case.currency),
            case.reason or "",
            f"[bold red]{when}[/]" if left is not None and left < timedelta(days=1) else when,
            local(case.due_by),
            case.order_id or "",
            case.charge or "",
        )
    out.print(table)


@disputes.command("show")
@click.argument("dispute_id")
@click.option("--account", help="A connected account (acct_…); the platform's by default.")
@click.option("--json", "as_json", is_flag=True, help="JSON, for scripts.")
def show(dispute_id: str, account: str | None, as_json: bool) -> None:
    """One dispute: charge, customer, order, evidence, deadline, outcome."""
    settings = load_settings_or_exit()
    now = utcnow()
    with database(settings) as engine:
        flows = _disputes(engine, settings)
        case = flows.case(dispute_id, account=account)
        alarms = flows.alarms(dispute_id) if case is not None else []
    if case is None:
        fail(f"no dispute {dispute_id} in the mirror")
    if as_json:
        data = _as_json(case, now)
        data["alarms"] = [{"key": key, "at": at.isoformat()} for key, at in alarms]
        click.echo(json.dumps(data, indent=2))
        return
    out = console()
    rows: list[tuple[str, str]] = [
        ("dispute", case.id),
        ("status", case.status + (f" ({case.outcome})" if case.outcome else "")),
        ("reason", case.reason or ""),
        ("amount", _money(case.amount, case.currency)),
        ("charge", case.charge or ""),
        ("payment intent", case.payment_intent or ""),
        ("customer", case.customer or ""),
        ("order", case.order_id or ""),
        ("early fraud warnings", ", ".join(case.early_fraud_warnings) or "none"),
        (
            "evidence",
            f"{'given' if case.has_evidence else 'none'}, submitted {case.submission_count} "
            f"time(s){': ' + ', '.join(sorted(case.evidence)) if case.evidence else ''}",
        ),
        (
            "due by",
            f"{local(case.due_by)} ({relative(case.due_by, now)})"
            if case.due_by
            else "no deadline",
        ),
        ("alarms", ", ".join(f"{key.rsplit(':', 1)[1]} at {iso(at)}" for key, at in alarms)),
        (
            "funds",
            f"withdrawn {_money(case.funds.withdrawn, case.currency)} + fee "
            f"{_money(case.funds.withdrawn_fee, case.currency)}, reinstated "
            f"{_money(case.funds.reinstated, case.currency)}; net "
            f"{_money(case.funds.net, case.currency)}",
        ),
    ]
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)


@disputes.command("submit")
@click.argument("dispute_id")
@click.option(
    "--evidence",
    "evidence_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A JSON object of evidence fields (Stripe's names).",
)
@click.option(
    "--no-submit", is_flag=True, help="Save the evidence only; submit it later (Stripe's submit)."
)
@click.option("--account", help="A connected account (acct_…); the platform's by default.")
def submit(dispute_id: str, evidence_file: Path, no_submit: bool, account: str | None) -> None:
    """Save evidence on a dispute and submit it (once; refused after the deadline)."""
    try:
        evidence = json.loads(evidence_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        fail(f"{evidence_file}: not a JSON file ({exc})")
    if not isinstance(evidence, dict):
        fail(f"{evidence_file}: a JSON object of evidence fields is expected")
    settings = load_settings_or_exit()
    with database(settings) as engine:
        try:
            case = _disputes(engine, settings).submit(
                dispute_id, evidence, submit=not no_submit, account=account
            )
        except (StripelineError, ValueError) as exc:
            fail(str(exc))
    verb = "saved" if no_submit else "submitted"
    click.echo(f"{case.id}: evidence {verb} ({', '.join(sorted(evidence))}); status {case.status}")
