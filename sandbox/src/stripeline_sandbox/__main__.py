"""``python -m stripeline_sandbox``: the same as ``stripeline-sandbox``."""

from __future__ import annotations

from stripeline_sandbox.cli import sandbox

if __name__ == "__main__":  # pragma: no cover
    sandbox()
