"""The ``stripeline`` command: the group, assembled from ``commands/``."""

from __future__ import annotations

from typing import Any

import click


@click.group()
@click.version_option(package_name="stripeline")
def main() -> None:
    """stripeline: a Stripe integration that is reliable by default."""


def run(argv: list[str] | None = None) -> Any:  # pragma: no cover - thin wrapper
    return main.main(args=argv, standalone_mode=False)


# -- commands defined in their own modules ------------------------------------
# (each registers one click command; keep this list sorted)
from stripeline.commands.console import console as _console  # noqa: E402
from stripeline.commands.disputes import disputes as _disputes  # noqa: E402
from stripeline.commands.doctor import doctor as _doctor  # noqa: E402
from stripeline.commands.events import events as _events  # noqa: E402
from stripeline.commands.mirror import mirror as _mirror  # noqa: E402
from stripeline.commands.run import migrate as _migrate  # noqa: E402
from stripeline.commands.run import serve as _serve  # noqa: E402
from stripeline.commands.run import worker as _worker  # noqa: E402
from stripeline.commands.sandbox import sandbox as _sandbox  # noqa: E402
from stripeline.commands.sync import sync as _sync  # noqa: E402
from stripeline.commands.verify import verify as _verify  # noqa: E402

main.add_command(_migrate)
main.add_command(_serve)
main.add_command(_worker)
main.add_command(_doctor)
main.add_command(_events)
main.add_command(_sandbox)
main.add_command(_sync)
main.add_command(_verify)
main.add_command(_mirror)
main.add_command(_disputes)
main.add_command(_console)
