"""Ingest benchmark: signed ~3 KB webhooks into stripeline vs a bare floor app.

For each backend (SQLite in WAL mode, PostgreSQL) and each round, two servers
run one after the other under the same stack (uvicorn, Starlette, in a
subprocess each) on a fresh scratch database:

* ``floor``: a bare Starlette app that verifies the signature with ``hmac``,
  reads the event id, and inserts the raw event with one SQL statement per
  request (autocommit), then answers;
* ``stripeline``: ``stripeline serve --no-worker``.

The load generator is this process: 16 keep-alive HTTP/1.1 connections over
loopback driven by asyncio, every request prepared (signed) before the clock
starts, so that the client spends as little CPU as possible on a 2-core
machine. Each event is distinct, each 2xx is checked, and afterwards the
number of stored rows must equal the number of 2xx answers (every event
committed before its answer).

A last phase runs plain ``stripeline serve`` (in-process worker on) under the
same load and reads the server's peak resident memory (``VmHWM``).

    python bench/ingest.py            # full run
    python bench/ingest.py --quick    # smaller, one round
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import _common as common

CONNECTIONS = 16


# -- the floor app (run in a subprocess: ``ingest.py --serve-floor``) ---------


def floor_app(database_url: str, secret: str, pg_threads: int) -> Any:
    """Verify with hmac, insert the raw event with one statement, answer."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    key = secret.encode()
    sqlite = database_url.startswith("sqlite")
    local = threading.local()
    # SQLite: one writer thread (its single write lock makes more pointless,
    # and its busy handler sleeps); PostgreSQL: one connection per thread.
    executor = ThreadPoolExecutor(max_workers=1 if sqlite else pg_threads)

    def connection() -> Any:
        conn = getattr(local, "conn", None)
        if conn is None:
            if sqlite:
                import sqlite3

                conn = sqlite3.connect(
                    database_url.removeprefix("sqlite:///"),
                    isolation_level=None,
                    check_same_thread=False,
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA busy_timeout=5000")
            else:
                import psycopg

                conn = psycopg.connect(database_url, autocommit=True)
            local.conn = conn
        return conn

    sql = (
        "INSERT INTO floor_events (id, type, payload, received_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (id) DO NOTHING"
    )
    if not sqlite:
        sql = sql.replace("?", "%s")

    def insert(event_id: str, event_type: str, body: bytes) -> None:
        received = datetime.now(UTC)
        connection().execute(
            sql, (event_id, event_type, body, received.isoformat() if sqlite else received)
        )

    def verified(body: bytes, header: str | None) -> bool:
        if not header:
            return False
        timestamp = None
        candidates = []
        for part in header.split(","):
            k, _, v = part.partition("=")
            if k == "t" and v.isdigit():
                timestamp = int(v)
            elif k == "v1":
                candidates.append(v)
        if timestamp is None or abs(time.time() - timestamp) > 300:
            return False
        good = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        return any(hmac.compare_digest(c.encode(), good.encode()) for c in candidates)

    async def webhook(request: Request) -> Response:
        body = await request.body()
        if not verified(body, request.headers.get("stripe-signature")):
            return JSONResponse({"error": "bad_signature"}, status_code=400)
        try:
            event = json.loads(body)
            event_id, event_type = event["id"], event["type"]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "bad_payload"}, status_code=400)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(executor, insert, event_id, event_type, body)
        return JSONResponse({"received": True, "id": event_id})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/webhooks/stripe", webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def create_floor_table(database_url: str) -> None:
    ddl = (
        "CREATE TABLE floor_events (id VARCHAR(255) PRIMARY KEY, type VARCHAR(255) NOT NULL, "
        "payload {blob} NOT NULL, received_at {ts} NOT NULL)"
    )
    if database_url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(ddl.format(blob="BLOB", ts="TEXT"))
        conn.commit()
        conn.close()
    else:
        import psycopg

        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(ddl.format(blob="BYTEA", ts="TIMESTAMPTZ"))


def count_rows(database_url: str, table: str) -> int:
    if database_url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        try:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
        return int(row[0]) if row else 0


# -- servers ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int

    def cpu_seconds(self) -> float:
        try:
            with open(f"/proc/{self.proc.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            return float("nan")

    def peak_rss_mb(self) -> float:
        try:
            with open(f"/proc/{self.proc.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_floor(database_url: str, pg_threads: int) -> Server:
    port = free_port()
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--serve-floor",
        "--port",
        str(port),
        "--database-url",
        database_url,
        "--floor-pg-threads",
        str(pg_threads),
    ]
    proc = subprocess.Popen(cmd, env={**os.environ, "BENCH_SECRET": common.SECRET})
    common.wait_ready(port, proc)
    return Server("floor", proc, port)


def start_stripeline(database_url: str, *, worker: bool) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STRIPELINE_"))} | {
        "STRIPE_SECRET_KEY": common.FAKE_KEY,
        "STRIPE_WEBHOOK_SECRET": common.SECRET,
        "STRIPELINE_DATABASE_URL": database_url,
        "STRIPELINE_LOG_LEVEL": "warning",
        "STRIPELINE_LOG_FORMAT": "json",
        # The key is fake: no background catch-up, and the SDK, should anything
        # call it, points at a closed local port (traffic stays on 127.0.0.1).
        "STRIPELINE_CATCH_UP_INTERVAL": "0",
        "STRIPELINE_STRIPE_API_BASE": "http://127.0.0.1:9",
    }
    args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    if not worker:
        args.append("--no-worker")
    cmd = [sys.executable, "-c", "from stripeline.cli import main; main()", *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    common.wait_ready(port, proc)
    return Server("stripeline", proc, port)


# -- the load generator -------------------------------------------------------


def prepare(port: int, count: int, *, run: str, start: int = 0) -> list[bytes]:
    """Signed HTTP requests, one per distinct event, built before the clock starts."""
    from stripeline.core.signature import sign

    now = int(time.time())
    requests = []
    for n in range(start, start + count):
        body = common.encode(common.make_event(n, run=run))
        head = (
            f"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nStripe-Signature: {sign(body, common.SECRET, now)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        requests.append(head + body)
    return requests


@dataclass
class LoadResult:
    ok: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


async def _connection(
    port: int, requests: list[bytes], index: list[int], result: LoadResult, deadline: float
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while index[0] < len(requests) and time.monotonic() < deadline:
            request = requests[index[0]]
            index[0] += 1
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            elapsed = (time.perf_counter() - t0) * 1000
            status = int(head[9:12])
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                result.ok += 1
                result.latencies_ms.append(elapsed)
            else:
                result.errors += 1
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _drive(port: int, requests: list[bytes], max_seconds: float) -> LoadResult:
    result = LoadResult()
    index = [0]
    deadline = time.monotonic() + max_seconds
    t0 = time.perf_counter()
    await asyncio.gather(
        *(_connection(port, requests, index, result, deadline) for _ in range(CONNECTIONS))
    )
    result.seconds = time.perf_counter() - t0
    return result


def run_load(server: Server, requests: list[bytes], max_seconds: float) -> LoadResult:
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    cpu0, server0 = time.process_time(), server.cpu_seconds()
    result: LoadResult = runner(_drive(server.port, requests, max_seconds))
    result.client_cpu = time.process_time() - cpu0
    result.server_cpu = server.cpu_seconds() - server0
    return result


# -- phases -------------------------------------------------------------------


@dataclass
class Measurement:
    backend: str
    app: str
    round: int
    result: LoadResult
    stored: int
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        r = self.result
        return {
            "backend": self.backend,
            "app": self.app,
            "round": self.round,
            "events_per_s": round(r.rate, 1),
            "p50_ms": round(common.percentile(r.latencies_ms, 50), 2),
            "p99_ms": round(common.percentile(r.latencies_ms, 99), 2),
            "ok": r.ok,
            "errors": r.errors,
            "stored": self.stored,
            "seconds": round(r.seconds, 2),
            "server_cpu_ms_per_event": round(1000 * r.server_cpu / max(r.ok, 1), 3),
            "client_cpu_ms_per_event": round(1000 * r.client_cpu / max(r.ok, 1), 3),
            **self.extra,
        }


def measure(
    backend: str,
    app: str,
    round_no: int,
    args: argparse.Namespace,
    *,
    worker: bool = False,
) -> Measurement:
    run = f"{app[:2]}{round_no}{int(time.time()) % 100000:05d}"
    with common.scratch_database(backend, args.postgres_url) as url:
        if app == "floor":
            create_floor_table(url)
            server = start_floor(url, args.floor_pg_threads)
            table = "floor_events"
        else:
            common.migrated(url)
            server = start_stripeline(url, worker=worker)
            table = "stripeline_events"
        try:
            warm = prepare(server.port, args.warmup, run=run)
            run_load(server, warm, args.max_seconds)
            requests = prepare(server.port, args.events, run=run, start=args.warmup)
            result = run_load(server, requests, args.max_seconds)
            extra: dict[str, Any] = {}
            if worker:
                extra["peak_rss_mb"] = round(server.peak_rss_mb(), 1)
        finally:
            server.stop()
        stored = count_rows(url, table) - args.warmup
    m = Measurement(backend, app + ("+worker" if worker else ""), round_no, result, stored, extra)
    s = m.summary()
    print(
        f"  {backend:10} {s['app']:18} round {round_no}: {s['events_per_s']:8.1f} ev/s  "
        f"p50 {s['p50_ms']:6.2f} ms  p99 {s['p99_ms']:6.2f} ms  ok {s['ok']} err {s['errors']} "
        f"stored {s['stored']}  server cpu {s['server_cpu_ms_per_event']} ms/ev"
        + (f"  peak RSS {extra['peak_rss_mb']} MB" if worker else ""),
        flush=True,
    )
    if stored < result.ok:
        print(f"  !! {stored} rows stored for {result.ok} 2xx answers", flush=True)
    return m


def best(ms: list[Measurement], backend: str, app: str) -> Measurement | None:
    found = [m for m in ms if m.backend == backend and m.app == app]
    return max(found, key=lambda m: m.result.rate) if found else None


def report(ms: list[Measurement], backends: list[str]) -> list[dict[str, Any]]:
    rows = []
    print("\nIngest (best round of each; 16 keep-alive connections, ~3 KB signed events)")
    print(
        f"{'backend':10} {'app':18} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'% floor':>8} {'peak RSS':>9}"
    )
    for backend in backends:
        floor = best(ms, backend, "floor")
        for app in ("floor", "stripeline", "stripeline+worker"):
            m = best(ms, backend, app)
            if m is None:
                continue
            s = m.summary()
            share = 100 * m.result.rate / floor.result.rate if floor and floor.result.rate else 0
            s["pct_of_floor"] = round(share, 1)
            rows.append(s)
            rss = f"{s['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in s else "-"
            print(
                f"{backend:10} {s['app']:18} {s['events_per_s']:9.0f} {s['p50_ms']:8.2f} "
                f"{s['p99_ms']:8.2f} {share:7.0f}% {rss:>9}"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer events, one round")
    parser.add_argument("--events", type=int, default=None, help="measured events per run")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up events per run")
    parser.add_argument("--rounds", type=int, default=None, help="floor/stripeline pairs")
    parser.add_argument("--max-seconds", type=float, default=90.0, help="cap per load phase")
    parser.add_argument(
        "--backend", choices=["sqlite", "postgres", "both"], default="both", help="databases"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("STRIPELINE_TEST_POSTGRES_URL", common.DEFAULT_POSTGRES_URL),
        help="a PostgreSQL server to create scratch databases on",
    )
    parser.add_argument("--floor-pg-threads", type=int, default=CONNECTIONS)
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-memory phase")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    # internal: run the floor app
    parser.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve_floor:
        import uvicorn

        app = floor_app(args.database_url, os.environ["BENCH_SECRET"], args.floor_pg_threads)
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
        return

    args.events = args.events or (3000 if args.quick else 10000)
    args.warmup = args.warmup if args.warmup is not None else (300 if args.quick else 1000)
    args.rounds = args.rounds or (1 if args.quick else 2)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]

    info = common.machine(args.postgres_url if "postgres" in backends else None)
    common.print_machine(info)
    print(
        f"ingest: {args.events} events per run (+{args.warmup} warm-up), "
        f"{CONNECTIONS} connections, {args.rounds} round(s)",
        flush=True,
    )
    ms: list[Measurement] = []
    for backend in backends:
        for round_no in range(1, args.rounds + 1):
            # Alternate the order so that neither app always runs first.
            order = ("floor", "stripeline") if round_no % 2 else ("stripeline", "floor")
            for app in order:
                ms.append(measure(backend, app, round_no, args))
        if not args.no_rss:
            ms.append(measure(backend, "stripeline", 1, args, worker=True))
    rows = report(ms, backends)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "results": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
