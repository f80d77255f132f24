"""Embedded in another server, stripeline logs in the configured format
(``STRIPELINE_LOG_FORMAT``), unless the application configured structlog
itself. Each case runs in a fresh interpreter: logging is process-wide."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

ASGI = """
import asyncio
from stripeline import Stripeline
from stripeline.log import get_logger

app = Stripeline()

async def main():
    async with app.lifespan(None):
        get_logger("stripeline.web").warning("probe", action="probe")

asyncio.run(main())
app.dispose()
"""

WSGI = """
from stripeline import Stripeline
from stripeline.log import get_logger
from stripeline.web.wsgi import make_wsgi_app

app = Stripeline()
wsgi = make_wsgi_app(app)
answer = wsgi({"REQUEST_METHOD": "GET", "PATH_INFO": "/healthz"}, lambda status, headers: None)
assert b"ok" in b"".join(answer)
get_logger("stripeline.web").warning("probe", action="probe")
app.dispose()
"""

HOST_FIRST = """
import structlog
structlog.configure(
    processors=[structlog.processors.KeyValueRenderer()],
    logger_factory=structlog.PrintLoggerFactory(file=__import__("sys").stderr),
)
"""


def run(script: str, sqlite_url: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STRIPELINE_"))}
    env.update(
        PYTHONPATH=str(ROOT / "src"),
        STRIPELINE_DATABASE_URL=sqlite_url,
        STRIPELINE_LOG_FORMAT="json",
        STRIPELINE_CATCH_UP_INTERVAL="0",
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [line for line in done.stderr.splitlines() if "probe" in line]


@pytest.mark.parametrize("script", [ASGI, WSGI], ids=["asgi-lifespan", "wsgi"])
def test_stripeline_logs_in_its_configured_format_when_embedded(
    script: str, sqlite_url: str
) -> None:
    (line,) = run(script, sqlite_url)
    logged = json.loads(line)
    assert (logged["event"], logged["action"], logged["level"]) == ("probe", "probe", "warning")


@pytest.mark.parametrize("script", [ASGI, WSGI], ids=["asgi-lifespan", "wsgi"])
def test_the_applications_own_structlog_configuration_wins(script: str, sqlite_url: str) -> None:
    (line,) = run(HOST_FIRST + script, sqlite_url)
    assert line == "action='probe' event='probe'"  # the host's renderer, not JSON
