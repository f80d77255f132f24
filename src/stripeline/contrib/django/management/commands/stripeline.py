"""``manage.py stripeline …``: the ``stripeline`` command with Django's settings.

Every subcommand and option is the ``stripeline`` command's own
(``manage.py stripeline worker``, ``manage.py stripeline events list``,
``manage.py stripeline verify`` …); what differs is where the settings come
from: ``settings.STRIPELINE``, then the environment, and the database is
Django's. ``worker`` (and ``serve``) run your ``STRIPELINE["app"]`` on
Django's connection, so a handler's ORM writes commit with the event.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

#: The subcommands that run the application (``--app``).
APP_COMMANDS = ("worker", "serve")


def environment(values: Mapping[str, Any], database_url: str) -> dict[str, str]:
    """The environment variables that say what ``values`` (``settings.STRIPELINE``
    without its own keys) and ``database_url`` say, for the commands that read
    their settings from the environment."""
    env = {"STRIPELINE_DATABASE_URL": database_url}
    for name, value in values.items():
        if value is None:
            continue
        key = name.upper() if name.startswith("stripe_") else f"STRIPELINE_{name.upper()}"
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, Mapping):
            value = ",".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list | tuple):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[key] = str(value)
    return env


def run(argv: Sequence[str]) -> int:
    """Run ``stripeline <argv>`` with Django's settings; its exit code."""
    from django.conf import settings

    from stripeline.cli import main
    from stripeline.contrib.django.conf import OWN_KEYS, database_url, get_app

    try:
        get_app()  # the settings checked, the application configured
    except ImproperlyConfigured as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    configured = {
        k: v for k, v in (getattr(settings, "STRIPELINE", None) or {}).items() if k not in OWN_KEYS
    }
    os.environ.update(environment(configured, database_url()))
    args = list(argv)
    if args and args[0] in APP_COMMANDS and not any(a.startswith("--app") for a in args):
        args[1:1] = ["--app", "stripeline.contrib.django:get_app"]
    try:
        main.main(args=args, prog_name="manage.py stripeline", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


class Command(BaseCommand):
    help = (
        "The stripeline command (worker, events, mirror, verify, doctor …) with Django's settings."
    )

    def run_from_argv(self, argv: list[str]) -> None:
        # The arguments are the stripeline command's, not Django's: passed on whole.
        sys.exit(run(argv[2:]))

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("args", nargs="*")

    def handle(self, *args: Any, **options: Any) -> None:
        # call_command("stripeline", "events", "list"): the output goes to
        # the command's stdout (what call_command(stdout=…) captures).
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run([str(a) for a in args])
        self.stdout.write(out.getvalue(), ending="")
        self.stderr.write(err.getvalue(), ending="")
        if code:
            raise CommandError(f"stripeline exited with {code}", returncode=code)
