"""Shared helpers for the benchmarks: Stripe-shaped events, scratch databases,
machine facts. Nothing here talks to anything but 127.0.0.1."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SECRET = "whsec_bench_secret_0123456789"
#: A well-formed but fake test key: with a key set, ``serve`` does not start
#: the sandbox, and nothing in ingest or processing calls the Stripe API.
FAKE_KEY = "sk_test_bench0000000000000000"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"

_TYPES = (
    ("payment_intent", "pi", ("created", "processing", "succeeded", "payment_failed")),
    ("customer", "cus", ("created", "updated")),
    ("invoice", "in", ("created", "finalized", "paid", "updated")),
    ("charge", "ch", ("succeeded", "updated", "refunded")),
)


def make_event(n: int, *, run: str, target_size: int = 3000, objects: int = 0) -> dict[str, Any]:
    """A current-API-shaped event of about ``target_size`` bytes, distinct per ``n``.

    With ``objects`` > 0 the event is about object ``n % objects`` (so later
    events update objects that earlier ones created); else every event has its
    own object.
    """
    kind, prefix, actions = _TYPES[n % len(_TYPES)]
    k = n % objects if objects else n
    created = 1_760_000_000 + n
    obj: dict[str, Any] = {
        "id": f"{prefix}_{run}{k:09d}",
        "object": kind,
        "amount": 1000 + (n * 37) % 90_000,
        "currency": "eur",
        "created": 1_760_000_000 + k,
        "customer": f"cus_{run}{(k * 7) % 100_000:09d}",
        "description": f"Order {n} for customer {k}",
        "livemode": False,
        "metadata": {"order_id": f"ord_{n}", "run": run},
        "status": actions[(n // len(_TYPES)) % len(actions)],
        "payment_method_types": ["card"],
        "shipping": {
            "name": f"Jenny Rosen {n}",
            "address": {
                "line1": f"{n} Market Street",
                "city": "San Francisco",
                "postal_code": f"{94000 + n % 999}",
                "country": "US",
            },
        },
    }
    body: dict[str, Any] = {
        "id": f"evt_{run}{n:012d}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": f"req_{run}{n}", "idempotency_key": str(uuid.UUID(int=n))},
        "type": f"{kind}.{obj['status']}",
    }
    size = len(json.dumps(body, separators=(",", ":")))
    if size < target_size:
        # Stripe objects carry many small fields; pad with varied ones.
        pad = target_size - size - 40
        obj["metadata"]["notes"] = (f"n{n}-" * (pad // 6 + 1))[: max(pad, 0)]
    return body


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- scratch databases --------------------------------------------------------


@contextmanager
def scratch_sqlite() -> Iterator[str]:
    """A SQLite URL in a fresh directory on the same disk as the temp dir."""
    directory = tempfile.mkdtemp(prefix="stripeline-bench-")
    try:
        yield f"sqlite:///{directory}/bench.db"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _pg_admin(url: str) -> Any:
    import psycopg

    from stripeline.db.engine import normalize_url

    base = normalize_url(url).replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(base, autocommit=True)


@contextmanager
def scratch_postgres(url: str) -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database next to ``url``, dropped after."""
    from sqlalchemy.engine import make_url

    from stripeline.db.engine import normalize_url

    name = f"stripeline_bench_{uuid.uuid4().hex[:12]}"
    with _pg_admin(url) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    scratch = (
        make_url(normalize_url(url))
        .set(database=name, drivername="postgresql")
        .render_as_string(hide_password=False)
    )
    try:
        yield scratch
    finally:
        with _pg_admin(url) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def settle(url: str, *, analyze: bool = False) -> None:
    """Before a measured phase: write back every dirty page of the machine
    (``sync``) and, on PostgreSQL, checkpoint: the phase before (the other
    app's run, a warm-up, a pre-fill) must not be flushed during this one,
    which would slow whichever app happens to run second.

    ``analyze`` (PostgreSQL): also gather the statistics of the database of
    ``url``, as autovacuum does within a minute of a new table's first rows
    (its naptime): a pre-filled inbox is measured as a server that has seen
    it, not in the few seconds before autovacuum wakes. SQLite keeps no
    statistics unless someone runs ANALYZE: it is measured without."""
    os.sync()
    if not url.startswith("sqlite"):
        if analyze:
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ANALYZE")
        with _pg_admin(url) as admin:
            admin.execute("CHECKPOINT")
    os.sync()


def database_cpu(url: str) -> dict[int, float]:
    """PostgreSQL: CPU seconds so far of each server process serving the
    database of ``url`` (by pid, from ``/proc``; empty on SQLite or where
    ``/proc`` cannot be read). ``database_cpu_since`` takes the difference."""
    if url.startswith("sqlite"):
        return {}
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    with _pg_admin(url) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    seconds = {pid: process_cpu(pid) for (pid,) in rows}
    return {pid: cpu for pid, cpu in seconds.items() if not math.isnan(cpu)}  # gone meanwhile


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far, from
    ``/proc``; NaN when it cannot be read (gone, or no ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def database_cpu_since(url: str, before: dict[int, float]) -> float:
    """CPU seconds the database's server processes used since ``before``
    (``database_cpu``); a process that ended meanwhile is not counted."""
    after = database_cpu(url)
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


@contextmanager
def scratch_database(backend: str, postgres_url: str) -> Iterator[str]:
    if backend == "sqlite":
        with scratch_sqlite() as url:
            yield url
    else:
        with scratch_postgres(postgres_url) as url:
            yield url


def migrated(url: str) -> None:
    from stripeline.db import make_engine, migrate

    engine = make_engine(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()


# -- servers ----------------------------------------------------------------


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Wait until the server on ``port`` answers ``/healthz`` with 200."""
    deadline = time.monotonic() + timeout
    request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(request)
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not become ready")


# -- the machine --------------------------------------------------------------


def machine(postgres_url: str | None) -> dict[str, str]:
    mem = "?"
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                    break
    except OSError:
        pass
    pg = "not reachable"
    if postgres_url:
        try:
            with _pg_admin(postgres_url) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                pg = str(row[0]) if row else "?"
        except Exception as exc:  # pragma: no cover - reported, not fatal
            pg = f"not reachable ({type(exc).__name__})"
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "commit": commit or "?",
        "cores": str(os.cpu_count()),
        "memory": mem,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg,
        "os": f"{platform.system()} {platform.release()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def print_machine(info: dict[str, str]) -> None:
    print(
        "machine: "
        + ", ".join(f"{k} {v}" for k, v in info.items() if k != "date")
        + f" — {info['date']}"
    )
