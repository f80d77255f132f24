"""``stripeline verify``: compare the mirror with Stripe (and repair it)."""

from __future__ import annotations

import json
import sys

import click

from stripeline.commands._common import console, database, fail, load_settings_or_exit
from stripeline.commands.sync import _reader, object_types
from stripeline.errors import StripeAPIError


@click.command()
@click.argument("types", nargs=-1, metavar="[TYPES]...")
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    help="Check N random mirrored objects by retrieving each, instead of listing every object.",
)
@click.option("--repair", is_flag=True, help="Write Stripe's state over every drift found.")
@click.option("--seed", type=int, hidden=True, help="Seed of --sample's choice (tests).")
@click.option("--json", "as_json", is_flag=True, help="The report as a JSON object.")
def verify(
    types: tuple[str, ...], sample: int | None, repair: bool, seed: int | None, as_json: bool
) -> None:
    """Compare the mirror of TYPES (default: all) with Stripe.

    Lists each type from the API and reports objects missing from the
    mirror, extra in it, or differing (which fields). Exits 1 when it finds
    drift (repaired or not), so that cron or CI notices; --repair fixes the
    mirror as well.
    """
    from rich.table import Table

    from stripeline.log import configure_logging
    from stripeline.sync import check_drift

    chosen = object_types(types)
    settings = load_settings_or_exit()
    configure_logging(settings.log_format, settings.log_level)
    reader = _reader(settings)
    with database(settings) as engine:
        try:
            report = check_drift(engine, reader, chosen, sample=sample, repair=repair, seed=seed)
        except StripeAPIError as exc:
            fail(f"Stripe: {exc.message} ({type(exc).__name__}); nothing was judged")
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        out = console()
        summary = Table(title="stripeline verify" + (f" (sample of {sample})" if sample else ""))
        for column in ("type", "checked", "mirrored", "missing", "extra", "differs", "changed"):
            summary.add_column(column, justify="left" if column == "type" else "right")
        for t in report.types:
            summary.add_row(
                t.object_type,
                str(t.checked),
                str(t.mirrored),
                str(t.count("missing")),
                str(t.count("extra")),
                str(t.count("differs")),
                str(t.changed),
            )
        out.print(summary)
        if report.drift:
            details = Table(title="drift")
            for column in ("type", "id", "drift", "fields", "repaired"):
                details.add_column(column)
            for d in report.drift:
                details.add_row(
                    d.object_type,
                    d.id,
                    d.kind,
                    ", ".join(d.fields),
                    "yes" if d.repaired else "no",
                )
            out.print(details)
            hint = "" if repair else "; run with --repair to fix the mirror"
            out.print(f"{len(report.drift)} object(s) drifted{hint}")
        else:
            out.print("the mirror agrees with Stripe")
    if not report.clean:
        sys.exit(1)
