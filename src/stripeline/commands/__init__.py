"""Operator commands of ``stripeline``, one module per group, registered in ``cli.py``."""

from __future__ import annotations
