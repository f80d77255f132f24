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


# -- processes that are killed and restarted (kill -9, outage) ----------------


def stripeline_env(database_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``stripeline serve`` or ``worker`` the suite
    starts itself: the fake key, the proof secret, ``proof_app`` importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STRIPELINE_"))}
    env |= {
        "STRIPE_SECRET_KEY": FAKE_KEY,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPELINE_DATABASE_URL": database_url,
        "STRIPELINE_LOG_LEVEL": "warning",
        "STRIPELINE_LOG_FORMAT": "json",
        "STRIPELINE_CATCH_UP_INTERVAL": "0",
        "STRIPELINE_STRIPE_API_BASE": "http://127.0.0.1:9",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH", "")])),
    }
    return env | (extra or {})


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``stripeline ARGS`` in a subprocess, its output appended to ``log``;
    not waited for (see ``wait_ready`` for a server)."""
    with open(log, "ab") as out:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, "-c", "from stripeline.cli import main; main()", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def signed_bodies(count: int, run: str) -> list[tuple[str, bytes]]:
    """``count`` distinct events (the bench's, about 3 KB, four object types),
    each about an object of its own: (id, body)."""
    events = [_bench.make_event(n, run=run) for n in range(count)]
    return [(e["id"], _bench.encode(e)) for e in events]


@dataclass
class Answer:
    at: float  # time.monotonic() when the answer (or the error) came
    status: int  # 0: no answer (connection refused or reset, timeout)
    retry_after: bool


class Load:
    """Senders that deliver signed events the way Stripe does: each event is
    signed afresh for every attempt and sent again after any answer but a
    2xx, or none, with a growing pause (at most ``max_pause``), until it is
    answered 2xx or ``give_up_after`` seconds have passed.

    ``rate`` (events per second, all senders together) spreads the first
    attempts over time; without it the senders go as fast as the server
    answers. The target port may change between attempts (``port``).
    """

    def __init__(
        self,
        port: int,
        events: list[tuple[str, bytes]],
        *,
        connections: int,
        rate: float | None = None,
        max_pause: float = 2.0,
        give_up_after: float = 900.0,
        timeout: float = 30.0,
    ) -> None:
        import queue
        import threading

        self.port = port
        self.events = events
        self.connections = connections
        self.rate = rate
        self.max_pause = max_pause
        self.give_up_after = give_up_after
        self.timeout = timeout
        self.answers: list[Answer] = []
        #: Event id -> when it was answered 2xx.
        self.acked: dict[str, float] = {}
        self.given_up: list[str] = []
        self.started = 0.0
        self.finished = 0.0
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[int, str, bytes] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"proof-sender-{n}", daemon=True)
            for n in range(connections)
        ]

    def start(self) -> Load:
        import time

        self.started = time.monotonic()
        for n, (event_id, body) in enumerate(self.events):
            self._jobs.put((n, event_id, body))
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.start()
        return self

    def join(self) -> Load:
        import time

        for thread in self._threads:
            thread.join()
        self.finished = time.monotonic()
        return self

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def _work(self) -> None:
        import random
        import time

        import httpx

        from stripeline.core.signature import sign

        rng = random.Random()  # noqa: S311 - pauses, not secrets
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with httpx.Client(timeout=self.timeout, limits=limits) as http:
            while (job := self._jobs.get()) is not None:
                n, event_id, body = job
                if self.rate:
                    time.sleep(max(0.0, self.started + n / self.rate - time.monotonic()))
                first = time.monotonic()
                attempt = 0
                while True:
                    header = sign(body, SECRET, timestamp=int(time.time()))
                    retry_after = False
                    try:
                        response = http.post(
                            f"http://127.0.0.1:{self.port}/webhooks/stripe",
                            content=body,
                            headers={"Stripe-Signature": header},
                        )
                        status = response.status_code
                        retry_after = "retry-after" in response.headers
                    except httpx.HTTPError:
                        status = 0
                    now = time.monotonic()
                    with self._lock:
                        self.answers.append(Answer(now, status, retry_after))
                        if 200 <= status < 300:
                            self.acked.setdefault(event_id, now)
                    if 200 <= status < 300:
                        break
                    if now - first > self.give_up_after:
                        with self._lock:
                            self.given_up.append(event_id)
                        break
                    attempt += 1
                    pause = min(self.max_pause, 0.05 * 2 ** min(attempt, 10))
                    time.sleep(pause * rng.uniform(0.5, 1.0))

    # -- what the answers say --------------------------------------------------

    def statuses(self, start: float = 0.0, end: float = float("inf")) -> dict[int, int]:
        """Answers by status between two ``time.monotonic()`` instants."""
        import collections

        counted = collections.Counter(a.status for a in self.answers if start <= a.at < end)
        return dict(sorted(counted.items()))

    def server_errors_without_retry_after(self) -> int:
        return sum(1 for a in self.answers if a.status >= 500 and not a.retry_after)


@dataclass
class Ledger:
    """What a served ``proof_app`` left behind, counted per event: the
    inbox, the processed attempts, the handler's rows, its outside effects."""

    stored: dict[str, tuple[str, int, int]]  # id -> (status, attempts, deliveries)
    processed_attempts: dict[str, int]
    handler_rows: dict[str, int]
    payload_wrong: list[str]  # stored with other bytes than were sent
    mirrored: dict[str, str | None]  # object id -> the event its state came from
    integrity: str

    @classmethod
    def read(cls, url: str, sent: dict[str, bytes]) -> Ledger:
        stored = {
            r[0]: (str(r[1]), int(r[2]), int(r[3]))
            for r in query(url, "SELECT id, status, attempts, deliveries FROM stripeline_events")
        }
        processed = {
            str(r[0]): int(r[1])
            for r in query(
                url,
                "SELECT event_id, count(*) FROM stripeline_attempts "
                "WHERE outcome = 'processed' GROUP BY event_id",
            )
        }
        rows = {
            str(r[0]): int(r[1])
            for r in query(url, "SELECT event_id, count(*) FROM proof_effects GROUP BY event_id")
        }
        wrong = [
            str(r[0])
            for r in query(url, "SELECT id, payload FROM stripeline_events")
            if str(r[0]) in sent and bytes(r[1]) != sent[str(r[0])]
        ]
        mirrored: dict[str, str | None] = {}
        for table in (
            "stripeline_payment_intents",
            "stripeline_customers",
            "stripeline_invoices",
            "stripeline_charges",
        ):
            mirrored |= {str(r[0]): r[1] for r in query(url, f"SELECT id, event_id FROM {table}")}  # noqa: S608
        if url.startswith("sqlite"):
            integrity = ", ".join(str(r[0]) for r in query(url, "PRAGMA integrity_check"))
        else:
            integrity = "ok"  # PostgreSQL: the WAL makes a commit whole or absent
        return cls(stored, processed, rows, wrong, mirrored, integrity)


def object_of(body: bytes) -> str:
    import json

    return str(json.loads(body)["data"]["object"]["id"])


def read_lines(path: Path) -> list[list[str]]:
    """The lines of an effects file, split (an absent file: none)."""
    try:
        return [line.split() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def wait_processed(url: str, count: int, *, stall: float = 120.0, cap: float = 1800.0) -> bool:
    """Wait until ``count`` events are processed: True then; False when no
    event was processed for ``stall`` seconds (a worker stuck, or never back)
    or ``cap`` seconds have passed. A slow machine only makes it wait longer."""
    import time

    started = last_move = time.monotonic()
    done = -1
    while True:
        try:
            now_done = int(
                query(url, "SELECT count(*) FROM stripeline_events WHERE status = 'processed'")[0][
                    0
                ]
            )
        except Exception:  # the database may still be away: poll on
            now_done = done
        now = time.monotonic()
        if now_done >= count:
            return True
        if now_done != done:
            done, last_move = now_done, now
        if now - last_move > stall or now - started > cap:
            return False
        time.sleep(0.5)
