"""What the sync jobs leave behind for people to read (the console's Sync page).

Kept in existing tables, bounded:

* **catch-up runs**: the last ``HISTORY_SIZE`` runs, each a row of
  ``stripeline_cursors`` (``catch_up:run:07``…, a ring the run counter
  ``catch_up:runs`` turns): when it began and ended, pages, events listed
  and stored, or the error that stopped it;
* **backfill progress**: per type, the objects and pages written in the
  current run (``backfill-progress:customer``…, beside the type's cursor);
* **verify reports**: each ``stripeline verify`` (and each repair from the
  console) appends its report to the audit log (``stripeline_console_audit``,
  action ``verify``), the drifted objects listed up to ``REPORT_DRIFT_LIMIT``.

Writing history never fails the job it records: a job's own work is done
(and committed) before its history is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, select

from stripeline.db.models import ConsoleAudit, Cursor
from stripeline.sync.cursors import read_cursor, save_cursor

#: Catch-up runs kept.
HISTORY_SIZE = 24
RUNS_CURSOR = "catch_up:runs"
RUN_PREFIX = "catch_up:run:"
PROGRESS_PREFIX = "backfill-progress:"
#: The audit log's action for a verify report.
VERIFY_ACTION = "verify"
#: Drifted objects kept in a stored report (the counts stay exact).
REPORT_DRIFT_LIMIT = 500

__all__ = [
    "BackfillRun",
    "CatchUpRun",
    "StoredReport",
    "TypeProgress",
    "backfill_progress",
    "catch_up_history",
    "last_verify_report",
    "record_backfill_page",
    "record_catch_up",
    "save_verify_report",
]

_cursors = cast(Table, Cursor.__table__)
_audit = cast(Table, ConsoleAudit.__table__)


@dataclass(frozen=True, slots=True)
class CatchUpRun:
    """One catch-up run as recorded."""

    started_at: datetime
    finished_at: datetime
    pages: int
    seen: int
    inserted: int
    ignored: int
    #: The error that stopped the run (None: it completed).
    error: str | None
    #: The saved cursor was near Stripe's 30-day retention when it began.
    cursor_was_old: bool


def record_catch_up(
    conn: Connection,
    *,
    started_at: datetime,
    now: datetime,
    pages: int = 0,
    seen: int = 0,
    inserted: int = 0,
    ignored: int = 0,
    error: str | None = None,
    cursor_was_old: bool = False,
) -> None:
    """Record one catch-up run in the ring (the oldest of ``HISTORY_SIZE`` goes)."""
    counter = read_cursor(conn, RUNS_CURSOR)
    number = int(counter.event_id) + 1 if counter and counter.event_id.isdigit() else 1
    summary: dict[str, Any] = {"p": pages, "s": seen, "i": inserted, "g": ignored}
    if error:
        summary["e"] = error[:160]
    if cursor_was_old:
        summary["o"] = 1
    value = json.dumps(summary, separators=(",", ":"))
    started = int(started_at.timestamp())
    save_cursor(conn, str(number), started, now=now, name=RUNS_CURSOR)
    save_cursor(conn, value, started, now=now, name=f"{RUN_PREFIX}{number % HISTORY_SIZE:02d}")


def catch_up_history(conn: Connection) -> list[CatchUpRun]:
    """The recorded catch-up runs, newest first."""
    rows = conn.execute(
        select(_cursors.c.value, _cursors.c.position_time, _cursors.c.updated_at).where(
            _cursors.c.name.like(RUN_PREFIX + "%")
        )
    ).all()
    runs = []
    for value, started, finished in rows:
        try:
            data = json.loads(value)
        except ValueError:
            continue
        runs.append(
            CatchUpRun(
                started_at=datetime.fromtimestamp(int(started or 0), UTC),
                finished_at=finished,
                pages=int(data.get("p", 0)),
                seen=int(data.get("s", 0)),
                inserted=int(data.get("i", 0)),
                ignored=int(data.get("g", 0)),
                error=data.get("e"),
                cursor_was_old=bool(data.get("o")),
            )
        )
    runs.sort(key=lambda run: (run.finished_at, run.started_at), reverse=True)
    return runs


def record_backfill_page(
    conn: Connection, object_type: str, *, run: int, objects: int, now: datetime
) -> None:
    """Add a written page (``objects`` objects) to the type's progress in ``run``."""
    name = PROGRESS_PREFIX + object_type
    held = read_cursor(conn, name)
    total, pages = 0, 0
    if held is not None and held.created == run and "/" in held.event_id:
        before, _, after = held.event_id.partition("/")
        total, pages = int(before), int(after)
    save_cursor(conn, f"{total + objects}/{pages + 1}", run, now=now, name=name)


@dataclass(frozen=True, slots=True)
class TypeProgress:
    """Where one type stands in the current backfill run."""

    object_type: str
    #: finished | in progress (a page cursor is saved) | not started
    state: str
    objects: int
    pages: int
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class BackfillRun:
    """The current (or last) backfill run and each type's progress in it."""

    run: int
    started_at: datetime
    types: list[TypeProgress]

    @property
    def finished(self) -> int:
        return sum(1 for t in self.types if t.state == "finished")

    @property
    def objects(self) -> int:
        return sum(t.objects for t in self.types)


def backfill_progress(conn: Connection) -> BackfillRun | None:
    """The last backfill run (None: no backfill ever ran) and its types' progress."""
    from stripeline.sync.backfill import CURSOR_PREFIX, FINISHED, RUN_CURSOR

    run = read_cursor(conn, RUN_CURSOR)
    if run is None or run.created is None:
        return None
    rows = conn.execute(
        select(
            _cursors.c.name, _cursors.c.value, _cursors.c.position_time, _cursors.c.updated_at
        ).where(
            _cursors.c.name.like(CURSOR_PREFIX + "%") | _cursors.c.name.like(PROGRESS_PREFIX + "%")
        )
    ).all()
    cursors: dict[str, tuple[str, datetime | None]] = {}
    counts: dict[str, tuple[int, int]] = {}
    for name, value, position, updated in rows:
        if position != run.created or name == RUN_CURSOR:
            continue
        if name.startswith(PROGRESS_PREFIX):
            before, _, after = str(value).partition("/")
            if before.isdigit() and after.isdigit():
                counts[name[len(PROGRESS_PREFIX) :]] = (int(before), int(after))
        else:
            cursors[name[len(CURSOR_PREFIX) :]] = (str(value), updated)
    types = []
    for object_type in sorted(set(cursors) | set(counts)):
        value, updated = cursors.get(object_type, ("", None))
        objects, pages = counts.get(object_type, (0, 0))
        if object_type in cursors:
            state = "finished" if value == FINISHED else "in progress"
        else:
            state = "not started"
        types.append(TypeProgress(object_type, state, objects, pages, updated))
    return BackfillRun(run.created, datetime.fromtimestamp(run.created, UTC), types)


@dataclass(frozen=True, slots=True)
class StoredReport:
    """A verify report as stored in the audit log."""

    id: int
    at: datetime
    actor: str
    report: dict[str, Any]

    @property
    def drift(self) -> list[dict[str, Any]]:
        """The drifted objects kept (type, id, kind, fields, repaired)."""
        return list(self.report.get("objects", []))

    @property
    def unrepaired(self) -> list[dict[str, Any]]:
        return [d for d in self.drift if not d.get("repaired")]


def save_verify_report(
    conn: Connection,
    report: dict[str, Any],
    *,
    actor: str,
    role: str = "system",
    now: datetime,
    client: str | None = None,
) -> None:
    """Append a verify report (``DriftReport.to_json()``) to the audit log; the
    drifted objects are listed under ``objects`` (at most ``REPORT_DRIFT_LIMIT``)."""
    objects = [
        {
            "type": d["object_type"],
            "id": d["id"],
            "kind": d["kind"],
            "fields": list(d.get("fields", ())),
            "repaired": bool(d.get("repaired")),
        }
        for t in report.get("types", [])
        for d in t.get("drift", [])
    ]
    kept = {
        **report,
        "types": [{k: v for k, v in t.items() if k != "drift"} for t in report.get("types", [])],
        "objects": objects[:REPORT_DRIFT_LIMIT],
        "objects_left_out": max(0, len(objects) - REPORT_DRIFT_LIMIT),
    }
    conn.execute(
        _audit.insert().values(
            at=now,
            actor=actor[:255],
            role=role[:16],
            action=VERIFY_ACTION,
            target=json.dumps(kept, separators=(",", ":"), default=str),
            count=len(objects),
            client=client[:64] if client else None,
        )
    )


def last_verify_report(conn: Connection) -> StoredReport | None:
    """The newest verify report in the audit log, if any."""
    row = conn.execute(
        select(_audit.c.id, _audit.c.at, _audit.c.actor, _audit.c.target)
        .where(_audit.c.action == VERIFY_ACTION)
        .order_by(_audit.c.at.desc(), _audit.c.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    try:
        report = json.loads(row.target or "{}")
    except ValueError:
        report = {}
    return StoredReport(int(row.id), row.at, str(row.actor), report)
