"""Structured logging with structlog: JSON when not a TTY, readable when it is.

Log lines carry a stable snake_case ``action`` and, where there is one, the
``event_id`` and ``event_type``. Raw bodies and secrets are never logged.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog for the process (the CLI calls this once)."""
    json_output = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def configure_logging_if_unset(fmt: str = "auto", level: str = "info") -> bool:
    """Embedded in another server (mounted in FastAPI, a WSGI app, Django):
    configure stripeline's logging as its settings say, unless the
    application configured structlog itself, whose configuration then wins.
    True when it was configured here."""
    if structlog.is_configured():
        return False
    configure_logging(fmt, level)
    return True


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
