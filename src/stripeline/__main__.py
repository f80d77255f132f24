"""``python -m stripeline`` is the ``stripeline`` command."""

from __future__ import annotations

from stripeline.cli import main

main(prog_name="stripeline")
