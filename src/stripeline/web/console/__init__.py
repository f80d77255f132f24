"""The operator console: a server-rendered web UI under ``/console``
(docs/console.md). Off unless ``STRIPELINE_CONSOLE_SECRET`` and a way to sign
in are configured; ``stripeline.web.create_app`` mounts it when they are."""

from __future__ import annotations

from stripeline.web.console.app import create_console
from stripeline.web.console.auth import hash_password

__all__ = ["create_console", "hash_password"]
