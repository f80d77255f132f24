"""``python -m stripeline.sandbox``: the same as ``stripeline sandbox``."""

from __future__ import annotations

from stripeline.sandbox.cli import sandbox

if __name__ == "__main__":  # pragma: no cover
    sandbox()
