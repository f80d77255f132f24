"""``stripeline sandbox``: the ``stripeline-sandbox`` command, when that distribution is installed.

The sandbox is its own distribution (``pip install 'stripeline[sandbox]'``);
this command only imports it when run, and says how to install it when it is
missing.
"""

from __future__ import annotations

import click

#: What to do when the sandbox is not installed (the command, `serve` without a key, the plugin).
SANDBOX_MISSING = (
    "the offline Stripe sandbox is not installed; install it with "
    "pip install 'stripeline[sandbox]' (from a checkout: pip install ./sandbox)"
)


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def sandbox(args: tuple[str, ...]) -> None:
    """Run the offline Stripe sandbox (test mode, state in memory); --help for its options."""
    try:
        from stripeline_sandbox.cli import sandbox as command
    except ImportError:
        raise click.ClickException(SANDBOX_MISSING) from None
    command.main(args=list(args), prog_name="stripeline sandbox", standalone_mode=False)
