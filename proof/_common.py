"""Shared helpers for the proof suites: servers, scratch databases, the machine.

Every server a suite starts listens on 127.0.0.1 only, and every request a
suite sends goes there: nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _load_bench_common() -> Any:
    """bench/_common.py, whose scratch databases, percentiles, readiness wait
    and machine description the proof suites share (both folders are scripts,
    and both call their helper module ``_common``)."""
    spec = importlib.util.spec_from_file_location("bench_common", ROOT / "bench" / "_common.py")
    if spec is None or spec.loader is None:
        raise ImportError("bench/_common.py is missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_bench = _load_bench_common()
percentile = _bench.percentile
migrated = _bench.migrated
wait_ready = _bench.wait_ready
_pg_admin = _bench._pg_admin
SECRET = "whsec_proof_secret_0123456789"  # noqa: S105 - a fixed test secret
#: With a key set, ``serve`` does not start its own sandbox. A suite that needs
#: the API passes the sandbox's key and address instead.
FAKE_KEY = "sk_test_proof0000000000000000"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- scratch databases --------------------------------------------------------


def postgres_url() -> str | None:
    """The PostgreSQL server the suites may use (``STRIPELINE_TEST_POSTGRES_URL``)."""
    return os.environ.get("STRIPELINE_TEST_POSTGRES_URL") or None


@contextmanager
def scratch_database(backend: str) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file in a new directory, or a new
    PostgreSQL database next to ``STRIPELINE_TEST_POSTGRES_URL``; removed after."""
    base = postgres_url()
    if backend != "sqlite" and base is None:
        raise RuntimeError("STRIPELINE_TEST_POSTGRES_URL is not set")
    with _bench.scratch_database(backend, base or "") as url:
        migrated(url)
        yield url


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of one read-only statement, on a connection of its own."""
    from sqlalchemy import create_engine, text

    from stripeline.db.engine import normalize_url

    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def execute(url: str, sql: str) -> None:
    from sqlalchemy import create_engine, text

    from stripeline.db.engine import normalize_url

    engine = create_engine(normalize_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


# -- servers ------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def status(self, field: str) -> int:
        """A ``/proc/PID/status`` figure in kB (``VmRSS``, ``VmHWM``)."""
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"no {field} for {self.proc.pid}")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_serve(
    database_url: str,
    log_dir: Path,
    *,
    worker: bool = True,
    app: str | None = None,
    api_key: str = FAKE_KEY,
    api_base: str = "http://127.0.0.1:9",
    extra_env: dict[str, str] | None = None,
) -> Server:
    """``stripeline serve`` in a subprocess on a free loopback port.

    With the fake key, API calls (none are expected) go to a closed local port.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STRIPELINE_"))}
    env |= {
        "STRIPE_SECRET_KEY": api_key,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPELINE_DATABASE_URL": database_url,
        "STRIPELINE_LOG_LEVEL": "warning",
        "STRIPELINE_LOG_FORMAT": "json",
        "STRIPELINE_CATCH_UP_INTERVAL": "0",
        "STRIPELINE_STRIPE_API_BASE": api_base,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH", "")])),
    }
    env |= extra_env or {}
    args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    if not worker:
        args.append("--no-worker")
    if app:
        args += ["--app", app]
    log = log_dir / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, "-c", "from stripeline.cli import main; main()", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_ready(port, proc, timeout=60.0)
    return Server(proc, port, log)


def stripeline_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STRIPELINE_"))}
    return subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-c", "from stripeline.cli import main; main()", *args],
        env=base | env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


# -- the machine --------------------------------------------------------------


def machine() -> dict[str, str]:
    """The bench's machine description, with the CPU model."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, str] = _bench.machine(postgres_url())
    return {"cpu": cpu, **info}


# -- results ------------------------------------------------------------------


@dataclass
class Criterion:
    """One pass/fail line: what the issue asks, what was measured."""

    name: str
    passed: bool
    measured: str
    #: A failure already reported as a bug, shown as a failure but not failing
    #: the run (so that CI catches every other regression meanwhile). Remove
    #: the mark with the fix.
    known_open: str = ""

    @property
    def blocking(self) -> bool:
        return not self.passed and not self.known_open

    @property
    def mark(self) -> str:
        """PASS, FAIL, or FAIL (known open), as the console shows it."""
        return "PASS" if self.passed else "FAIL (known open)" if self.known_open else "FAIL"


@dataclass
class SuiteResult:
    name: str
    title: str
    figures: list[tuple[str, str]]
    criteria: list[Criterion]
    notes: list[str]
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """No failed criterion but the known open ones."""
        return not any(c.blocking for c in self.criteria)


def suite_main(run: Callable[[bool, Path], SuiteResult], doc: str, short_help: str) -> None:
    """``python proof/<suite>.py [--short]``: run one suite, print its figures
    and criteria, exit 1 on a blocking failure."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--short", action="store_true", help=short_help)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stripeline-proof-") as work:
        result = run(args.short, Path(work))
    for name, value in result.figures:
        print(f"{name}: {value}")
    for c in result.criteria:
        print(f"{c.mark}  {c.name}: {c.measured}")
    sys.exit(0 if result.passed else 1)
