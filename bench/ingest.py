"""Ingest benchmark: signed ~3 KB webhooks into stripeline vs bare floor apps.

For each backend (SQLite in WAL mode with ``synchronous=FULL``, PostgreSQL
with ``synchronous_commit=on``) and each round, three servers run one after
the other under the same stack (uvicorn, Starlette, in a subprocess each) on a
fresh scratch database:

* ``floor-group``: the floor stripeline is measured against. A bare app that
  verifies the signature with ``hmac``, reads the event id and type, and hands
  the raw event to a writer thread that inserts whatever is queued with one
  statement and commits once per group (the same durability as stripeline:
  every 2xx is on disk), then answers each request of the group;
* ``floor-request``: the same app committing once per request (autocommit),
  the floor earlier BENCHMARKS.md sections compared with;
* ``stripeline``: ``stripeline serve --no-worker``.

The load generator is this process: 16 keep-alive HTTP/1.1 connections over
loopback driven by asyncio, every request prepared (signed) before the clock
starts, so that the client spends as little CPU as possible on a 2-core
machine. Each event is distinct, each 2xx is checked, and afterwards the
number of stored rows must equal the number of 2xx answers (every event
committed before its answer).

Then, with a worker draining the same database while the events arrive:

* ``stripeline+worker``: plain ``stripeline serve`` (in-process worker), also
  read for the server's peak resident memory (``VmHWM``);
* ``stripeline+worker-process`` (SQLite): ``serve --no-worker`` and a
  separate ``stripeline worker`` process on the same file.

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


def floor_app(database_url: str, secret: str, pg_threads: int, *, group: bool) -> Any:
    """Verify with hmac, insert the raw event, answer once it is committed:
    with ``group``, a writer thread commits whatever is queued at once (one
    statement, one transaction); else one autocommitted statement a request."""
    import queue
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

                conn = psycopg.connect(database_url, autocommit=not group)
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

    pending: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def write_groups() -> None:
        """Take everything queued, insert it in one transaction, commit,
        then answer the group (one wake-up of the event loop per group)."""
        conn = connection()
        while True:
            batch = [pending.get()]
            while len(batch) < 128:
                try:
                    batch.append(pending.get_nowait())
                except queue.Empty:
                    break
            received = datetime.now(UTC)
            at: Any = received.isoformat() if sqlite else received
            rows = sorted(
                (event_id, event_type, body, at) for event_id, event_type, body, _, _ in batch
            )
            if sqlite:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
            else:
                with conn.cursor() as cursor:
                    cursor.execute(group_sql(len(rows)), [v for row in rows for v in row])
                conn.commit()
            loop = batch[0][4]
            loop.call_soon_threadsafe(answer_all, [future for _, _, _, future, _ in batch])

    def answer_all(futures: list[asyncio.Future[None]]) -> None:
        for future in futures:
            if not future.done():
                future.set_result(None)

    group_sqls: dict[int, str] = {}

    def group_sql(n: int) -> str:
        if n not in group_sqls:
            group_sqls[n] = (
                "INSERT INTO floor_events (id, type, payload, received_at) VALUES "  # noqa: S608
                + ", ".join(["(%s, %s, %s, %s)"] * n)
                + " ON CONFLICT (id) DO NOTHING"
            )
        return group_sqls[n]

    threads = [
        threading.Thread(target=write_groups, daemon=True)
        for _ in range(1 if (sqlite or not group) else 2)
    ]
    if group:
        for thread in threads:
            thread.start()

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
        if group:
            future: asyncio.Future[None] = loop.create_future()
            pending.put((event_id, event_type, body, future, loop))
            await future
        else:
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
        return common.process_cpu(self.proc.pid)

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


def start_floor(database_url: str, pg_threads: int, *, group: bool) -> Server:
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
        *(["--floor-group"] if group else []),
    ]
    proc = subprocess.Popen(cmd, env={**os.environ, "BENCH_SECRET": common.SECRET})
    common.wait_ready(port, proc)
    return Server("floor-group" if group else "floor-request", proc, port)


def stripeline_env(database_url: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STRIPELINE_"))} | {
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


def start_stripeline(database_url: str, *, worker: bool) -> Server:
    port = free_port()
    env = stripeline_env(database_url)
    args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    if not worker:
        args.append("--no-worker")
    cmd = [sys.executable, "-c", "from stripeline.cli import main; main()", *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    common.wait_ready(port, proc)
    return Server("stripeline", proc, port)


def start_worker_process(database_url: str) -> subprocess.Popen[bytes]:
    """``stripeline worker`` on the same database, in a process of its own."""
    cmd = [sys.executable, "-c", "from stripeline.cli import main; main()", "worker"]
    return subprocess.Popen(cmd, env=stripeline_env(database_url), stdout=subprocess.DEVNULL)


def processed_rows(database_url: str) -> int:
    """Events the worker has finished (the rest were still waiting)."""
    return count_rows(database_url, "stripeline_events WHERE status = 'processed'")


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
    #: PostgreSQL: CPU of the server processes serving the scratch database.
    db_cpu: float = 0.0

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


def run_load(
    server: Server, requests: list[bytes], max_seconds: float, database_url: str = "sqlite:"
) -> LoadResult:
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    db0 = common.database_cpu(database_url)
    cpu0, server0 = time.process_time(), server.cpu_seconds()
    result: LoadResult = runner(_drive(server.port, requests, max_seconds))
    result.client_cpu = time.process_time() - cpu0
    result.server_cpu = server.cpu_seconds() - server0
    result.db_cpu = common.database_cpu_since(database_url, db0)
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
            "db_cpu_ms_per_event": round(1000 * r.db_cpu / max(r.ok, 1), 3),
            **self.extra,
        }


def measure(
    backend: str,
    app: str,
    round_no: int,
    args: argparse.Namespace,
    *,
    worker: str | None = None,
) -> Measurement:
    """One app under load on a fresh database. ``worker``: ``"thread"``
    (``serve`` with its in-process worker) or ``"process"`` (a separate
    ``stripeline worker`` on the same database) drains while events arrive."""
    run = f"{app[-2:]}{round_no}{int(time.time()) % 100000:05d}"
    worker_proc: subprocess.Popen[bytes] | None = None
    with common.scratch_database(backend, args.postgres_url) as url:
        if app.startswith("floor"):
            create_floor_table(url)
            server = start_floor(url, args.floor_pg_threads, group=app == "floor-group")
            table = "floor_events"
        else:
            common.migrated(url)
            server = start_stripeline(url, worker=worker == "thread")
            table = "stripeline_events"
            if worker == "process":
                worker_proc = start_worker_process(url)
        extra: dict[str, Any] = {}
        try:
            warm = prepare(server.port, args.warmup, run=run)
            run_load(server, warm, args.max_seconds)
            requests = prepare(server.port, args.events, run=run, start=args.warmup)
            common.settle(url)
            result = run_load(server, requests, args.max_seconds, url)
            if worker is not None:
                # End to end: from the first POST until the worker applied the last event.
                extra["processed_during_load"] = processed_rows(url) - args.warmup
                waited = time.perf_counter()
                while processed_rows(url) < args.warmup + result.ok:
                    if time.perf_counter() - waited > args.max_seconds:
                        break
                    time.sleep(0.05)
                extra["end_to_end_s"] = round(result.seconds + time.perf_counter() - waited, 2)
            if worker == "thread":
                extra["peak_rss_mb"] = round(server.peak_rss_mb(), 1)
        finally:
            server.stop()
            if worker_proc is not None:
                worker_proc.send_signal(signal.SIGINT)
                try:
                    worker_proc.wait(20)
                except subprocess.TimeoutExpired:
                    worker_proc.kill()
                    worker_proc.wait(5)
        stored = count_rows(url, table) - args.warmup
    name = app + {None: "", "thread": "+worker", "process": "+worker-process"}[worker]
    m = Measurement(backend, name, round_no, result, stored, extra)
    s = m.summary()
    print(
        f"  {backend:10} {s['app']:26} round {round_no}: {s['events_per_s']:8.1f} ev/s  "
        f"p50 {s['p50_ms']:6.2f} ms  p99 {s['p99_ms']:7.2f} ms  ok {s['ok']} err {s['errors']} "
        f"stored {s['stored']}  server cpu {s['server_cpu_ms_per_event']} ms/ev"
        + (f" (+ database {s['db_cpu_ms_per_event']})" if backend == "postgres" else "")
        + (
            f"  processed {extra['processed_during_load']} during load, "
            f"all in {extra['end_to_end_s']} s"
            if worker
            else ""
        )
        + (f"  peak RSS {extra['peak_rss_mb']} MB" if worker == "thread" else ""),
        flush=True,
    )
    if stored < result.ok:
        print(f"  !! {stored} rows stored for {result.ok} 2xx answers", flush=True)
    return m


def best(ms: list[Measurement], backend: str, app: str) -> Measurement | None:
    found = [m for m in ms if m.backend == backend and m.app == app]
    return max(found, key=lambda m: m.result.rate) if found else None


APPS = (
    "floor-group",
    "floor-request",
    "stripeline",
    "stripeline+worker",
    "stripeline+worker-process",
)


def report(ms: list[Measurement], backends: list[str]) -> list[dict[str, Any]]:
    """Each round's stripeline beside the floors of the same round, then the
    ratio per round (same-run ratios: the machine is shared and noisy)."""
    rows = []
    print("\nIngest (16 keep-alive connections, ~3 KB signed events; % of the same round's floor)")
    print(
        f"{'backend':10} {'app':26} {'round':>5} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'% group':>8} {'% request':>9} {'peak RSS':>9}"
    )
    for backend in backends:
        rounds = sorted({m.round for m in ms if m.backend == backend})
        for round_no in rounds:
            here = {m.app: m for m in ms if m.backend == backend and m.round == round_no}
            group = here.get("floor-group")
            request = here.get("floor-request")
            for app in APPS:
                m = here.get(app)
                if m is None:
                    continue
                s = m.summary()
                s["pct_of_floor_group"] = (
                    round(100 * m.result.rate / group.result.rate, 1) if group else None
                )
                s["pct_of_floor_request"] = (
                    round(100 * m.result.rate / request.result.rate, 1) if request else None
                )
                rows.append(s)
                rss = f"{s['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in s else "-"
                pg = s["pct_of_floor_group"]
                pr = s["pct_of_floor_request"]
                print(
                    f"{backend:10} {s['app']:26} {round_no:5} {s['events_per_s']:9.0f} "
                    f"{s['p50_ms']:8.2f} {s['p99_ms']:8.2f} "
                    f"{'-' if pg is None else f'{pg:.0f}%':>8} "
                    f"{'-' if pr is None else f'{pr:.0f}%':>9} {rss:>9}"
                )
    print(
        "\nOver all rounds (the apps' order alternates: an even number of rounds"
        " puts each app first as often as last)"
    )
    for backend in backends:
        middle = {
            app: common.median([m.result.rate for m in ms if m.backend == backend and m.app == app])
            for app in ("floor-group", "stripeline")
            if any(m.backend == backend and m.app == app for m in ms)
        }
        if len(middle) == 2:
            rounds = len({m.round for m in ms if m.backend == backend})
            print(
                f"{backend:10} stripeline {middle['stripeline']:.0f} events/s, floor-group"
                f" {middle['floor-group']:.0f}: {100 * middle['stripeline'] / middle['floor-group']:.0f}%"
                f" (median of {rounds} round(s) each)"
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
    parser.add_argument(
        "--no-worker", action="store_true", help="skip the phases with a worker draining"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    # internal: run the floor app
    parser.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--floor-group", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve_floor:
        import uvicorn

        app = floor_app(
            args.database_url,
            os.environ["BENCH_SECRET"],
            args.floor_pg_threads,
            group=args.floor_group,
        )
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
            # Alternate the order so that no app always runs first.
            order = ["floor-group", "stripeline", "floor-request"]
            if round_no % 2 == 0:
                order.reverse()
            for app in order:
                ms.append(measure(backend, app, round_no, args))
            if not args.no_worker:
                ms.append(measure(backend, "stripeline", round_no, args, worker="thread"))
                if backend == "sqlite":
                    ms.append(measure(backend, "stripeline", round_no, args, worker="process"))
    rows = report(ms, backends)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "results": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
