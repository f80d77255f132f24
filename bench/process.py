"""Processing benchmark: events applied to the mirror per second by one worker.

For each backend (SQLite in WAL mode, PostgreSQL) and each round, on fresh
scratch databases:

* ``worker``: the inbox is pre-filled with N pending events (~3 KB, objects of
  four types, each object updated several times), then one ``Worker`` runs
  ``run_once()`` until nothing is claimed; every event must end ``processed``.
* ``baseline``: the same payloads, parsed, and their objects upserted into the
  same mirror table with a bare batched ``INSERT … ON CONFLICT DO UPDATE``
  (driver ``executemany``, one commit per batch of the worker's batch size).
* ``inbox``: a bare durable worker on the same pre-filled inbox, on the
  driver: each transaction takes the next batch of due events (the worker's
  own claim statement: ``BEGIN IMMEDIATE`` on SQLite, ``FOR NO KEY UPDATE
  SKIP LOCKED`` on PostgreSQL), parses them, upserts their objects as the
  baseline does and marks them processed, then commits. What any worker
  that keeps its inbox on the same database must do at least: the worker's
  distance to it is stripeline's own cost (typed tables, ordering, locks,
  metrics), the baseline's distance to it the inbox's.

    python bench/process.py            # full run
    python bench/process.py --quick    # smaller, one round
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import _common as common

#: The worker's default claim size (STRIPELINE_WORKER_BATCH_SIZE); the baseline
#: commits in groups of the same size.
BATCH = 500


def payloads(count: int, run: str) -> list[bytes]:
    objects = max(1, count // 4)  # every object gets ~4 events
    return [common.encode(common.make_event(n, run=run, objects=objects)) for n in range(count)]


def fill_inbox(url: str, bodies: list[bytes]) -> None:
    from stripeline import inbox
    from stripeline.core.envelope import parse_envelope
    from stripeline.db import make_engine
    from stripeline.db.engine import connect

    engine = make_engine(url)
    now = inbox.utcnow()
    try:
        for start in range(0, len(bodies), 1000):
            items = [
                inbox.IncomingEvent(
                    envelope=parse_envelope(body)[0],
                    payload=body,
                    source="webhook",
                    received_at=now,
                )
                for body in bodies[start : start + 1000]
            ]
            with connect(engine) as conn:
                inbox.store(conn, items)
    finally:
        engine.dispose()


def run_worker(url: str, bodies: list[bytes]) -> dict[str, Any]:
    from stripeline import inbox
    from stripeline.app import Stripeline
    from stripeline.db import make_engine
    from stripeline.db.engine import connect
    from stripeline.settings import Settings
    from stripeline.worker import Worker

    fill_inbox(url, bodies)
    common.settle(url, analyze=True)
    engine = make_engine(url)
    app = Stripeline(
        Settings(stripe_webhook_secret=common.SECRET, database_url=url, worker_batch_size=BATCH),
        engine=engine,
    )
    worker = Worker(app, listen=False)
    try:
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        total = 0
        while True:
            done = worker.run_once()
            if done == 0:
                break
            total += done
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        with connect(engine, readonly=True) as conn:
            depth = inbox.queue_depth(conn)
    finally:
        worker.close()
        engine.dispose()
    assert depth["processed"] == len(bodies), depth
    return {"events": total, "seconds": seconds, "cpu": cpu}


def _bare(url: str) -> tuple[Any, bool]:
    """A driver connection to ``url`` (SQLite: WAL, ``synchronous=FULL``,
    autocommit off by hand) and whether it is SQLite."""
    if url.startswith("sqlite"):
        import sqlite3

        conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn, True
    import psycopg

    return psycopg.connect(url), False


def _upsert_sql(sqlite: bool) -> str:
    columns = (
        "account, id, object, livemode, data, marker, marker_rank, event_id, deleted, updated_at"
    )
    placeholders = (
        ", ".join("?" * 10) if sqlite else "%s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s"
    )
    return (
        f"INSERT INTO stripeline_objects ({columns}) VALUES ({placeholders}) "  # noqa: S608
        "ON CONFLICT (account, id) DO UPDATE SET object = excluded.object, "
        "livemode = excluded.livemode, data = excluded.data, marker = excluded.marker, "
        "marker_rank = excluded.marker_rank, event_id = excluded.event_id, "
        "deleted = excluded.deleted, updated_at = excluded.updated_at "
        "WHERE excluded.marker >= stripeline_objects.marker"
    )


def _object_rows(bodies: list[bytes], stamp: Any) -> list[tuple[Any, ...]]:
    """Each payload parsed and its object as a row of ``_upsert_sql``."""
    rows = []
    for body in bodies:
        event = json.loads(body)
        obj = event["data"]["object"]
        rows.append(
            (
                event.get("account") or "",
                obj["id"],
                obj["object"],
                event["livemode"],
                json.dumps(obj),
                event["created"],
                1,
                event["id"],
                False,
                stamp,
            )
        )
    return rows


def _stamp(sqlite: bool) -> Any:
    now = datetime.now(UTC)
    return now.replace(tzinfo=None).isoformat(sep=" ") if sqlite else now


def run_baseline(url: str, bodies: list[bytes]) -> dict[str, Any]:
    """Parse each payload, upsert its object: batched executemany, commit per batch."""
    common.settle(url, analyze=True)
    conn, sqlite = _bare(url)
    sql = _upsert_sql(sqlite)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    for start in range(0, len(bodies), BATCH):
        rows = _object_rows(bodies[start : start + BATCH], _stamp(sqlite))
        if sqlite:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, rows)
            conn.execute("COMMIT")
        else:
            with conn.cursor() as cur:
                cur.executemany(sql, rows)
            conn.commit()
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    conn.close()
    return {"events": len(bodies), "seconds": seconds, "cpu": cpu}


def run_inbox(url: str, bodies: list[bytes]) -> dict[str, Any]:
    """A bare durable worker on the pre-filled inbox: per transaction, take
    the next batch of due events (the worker's claim statement), parse them,
    upsert their objects as ``run_baseline`` does, mark them processed."""
    from stripeline import inbox

    fill_inbox(url, bodies)
    common.settle(url, analyze=True)
    conn, sqlite = _bare(url)
    upsert = _upsert_sql(sqlite)
    mark = "?" if sqlite else "%s"
    pick = inbox._PICK["sqlite" if sqlite else "postgresql"]
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    total = 0
    while True:
        stamp = _stamp(sqlite)
        if sqlite:
            conn.execute("BEGIN IMMEDIATE")
        cur = conn.cursor()
        cur.execute(pick, (stamp, BATCH))
        picked = cur.fetchall()
        if not picked:
            if sqlite:
                conn.execute("ROLLBACK")
            else:
                conn.rollback()
            break
        cur.executemany(upsert, _object_rows([bytes(row[2]) for row in picked], stamp))
        ids = [row[0] for row in picked]
        where = f"id IN ({', '.join([mark] * len(ids))})" if sqlite else "id = ANY(%s)"
        cur.execute(
            "UPDATE stripeline_events SET status = 'processed', processed_at = "  # noqa: S608
            f"{mark}, next_attempt_at = NULL, attempts = attempts + 1 WHERE {where}",
            (stamp, *ids) if sqlite else (stamp, ids),
        )
        if sqlite:
            conn.execute("COMMIT")
        else:
            conn.commit()
        total += len(picked)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    conn.close()
    assert total == len(bodies), total
    return {"events": total, "seconds": seconds, "cpu": cpu}


def measure(backend: str, kind: str, round_no: int, args: argparse.Namespace) -> dict[str, Any]:
    run = f"{kind[:2]}{round_no}{int(time.time()) % 100000:05d}"
    bodies = payloads(args.events, run)
    with common.scratch_database(backend, args.postgres_url) as url:
        common.migrated(url)
        run = {"worker": run_worker, "baseline": run_baseline, "inbox": run_inbox}[kind]
        result = run(url, bodies)
    rate = result["events"] / result["seconds"]
    row = {
        "backend": backend,
        "kind": kind,
        "round": round_no,
        "events": result["events"],
        "seconds": round(result["seconds"], 2),
        "events_per_s": round(rate, 1),
        "cpu_ms_per_event": round(1000 * result["cpu"] / result["events"], 3),
    }
    print(
        f"  {backend:10} {kind:9} round {round_no}: {rate:8.1f} ev/s "
        f"({row['events']} in {row['seconds']} s, {row['cpu_ms_per_event']} ms CPU/event here)",
        flush=True,
    )
    return row


TARGETS = {"sqlite": 3000, "postgres": 2000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer events, one round")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("STRIPELINE_TEST_POSTGRES_URL", common.DEFAULT_POSTGRES_URL),
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    args.events = args.events or (3000 if args.quick else 20000)
    args.rounds = args.rounds or (1 if args.quick else 2)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]

    info = common.machine(args.postgres_url if "postgres" in backends else None)
    common.print_machine(info)
    print(f"process: {args.events} events per run, batch {BATCH}, {args.rounds} round(s)")
    rows = []
    for backend in backends:
        for round_no in range(1, args.rounds + 1):
            kinds = ("baseline", "inbox", "worker")
            order = kinds if round_no % 2 else kinds[::-1]
            for kind in order:
                rows.append(measure(backend, kind, round_no, args))

    print("\nProcessing (best round of each; one worker, pre-filled inbox)")
    print(
        f"{'backend':10} {'run':9} {'events/s':>9} {'% base':>7} {'% inbox':>8} {'target':>7}  met"
    )
    summary = []
    for backend in backends:
        best = {
            kind: max(
                (r for r in rows if r["backend"] == backend and r["kind"] == kind),
                key=lambda r: r["events_per_s"],
            )
            for kind in ("baseline", "inbox", "worker")
        }
        base, bare = best["baseline"]["events_per_s"], best["inbox"]["events_per_s"]
        for kind, r in best.items():
            share = 100 * r["events_per_s"] / base
            of_inbox = 100 * r["events_per_s"] / bare
            target = TARGETS[backend] if kind == "worker" else None
            met = "" if target is None else ("yes" if r["events_per_s"] >= target else "NO")
            print(
                f"{backend:10} {r['kind']:9} {r['events_per_s']:9.0f} {share:6.0f}% "
                f"{of_inbox:7.0f}% {target or '':>7}  {met}"
            )
            summary.append(
                {
                    **r,
                    "pct_of_baseline": round(share, 1),
                    "pct_of_inbox": round(of_inbox, 1),
                    "target": target,
                }
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "results": summary}, fh, indent=2)


if __name__ == "__main__":
    main()
