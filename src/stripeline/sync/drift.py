"""Drift check: compare the mirror with Stripe, and repair it (``stripeline verify``).

``check_drift`` lists each object type from the API (``stripeline.gateway.pages``)
and compares it with the mirror's rows of that type:

* **missing**: Stripe lists it, the mirror has no row (or a deleted one);
* **extra**: the mirror holds it as existing, Stripe does not list it;
* **differs**: both have it, with different top-level fields (named).

A row whose marker is newer than the listing's start changed while the check
ran (an event came in): it is not judged. ``sample=N`` checks N random
mirrored objects by retrieving each instead of listing everything (it can
find extra and differing objects, not missing ones).

``repair=True`` writes Stripe's state through ``mirror.apply_states`` (a
state read at the listing's start; where that cannot be ordered against
the row, within the same second, the object is read again a moment later).
An extra row is read again: gone, it is marked deleted.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Engine, select

from stripeline.core.ordering import FETCH_SLACK_SECONDS
from stripeline.db import connect
from stripeline.gateway.reader import LISTERS, Reader, pages
from stripeline.inbox import utcnow
from stripeline.log import get_logger
from stripeline.mirror._store import apply_states, state_from_fetch
from stripeline.mirror.tables import GENERIC, table_for
from stripeline.sync.history import save_verify_report

#: Longest wait for a new second before re-reading an object to repair.
MAX_REPAIR_WAIT_SECONDS = FETCH_SLACK_SECONDS + 1.5

_NO_FIELDS: tuple[str, ...] = ()

log = get_logger("stripeline.sync.drift")


@dataclass(frozen=True, slots=True)
class Drift:
    """One object on which the mirror and Stripe disagree."""

    object_type: str
    id: str
    #: missing | extra | differs
    kind: str
    #: For ``differs``: the top-level fields that differ.
    fields: tuple[str, ...] = ()
    repaired: bool = False


@dataclass
class TypeDrift:
    """What the drift check found for one object type."""

    object_type: str
    #: Objects Stripe listed (or, sampling, objects retrieved).
    checked: int = 0
    #: Rows of the type the mirror holds as existing.
    mirrored: int = 0
    #: Objects not judged because they changed while the check ran.
    changed: int = 0
    drift: list[Drift] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for d in self.drift if d.kind == kind)

    def to_json(self) -> dict[str, Any]:
        """The fields, and the drift counted by kind."""
        return {
            **asdict(self),
            "missing": self.count("missing"),
            "extra": self.count("extra"),
            "differs": self.count("differs"),
        }


@dataclass
class DriftReport:
    """What ``check_drift`` found (and repaired)."""

    sample: int | None
    repair: bool
    types: list[TypeDrift] = field(default_factory=list)
    reads: int = 0
    seconds: float = 0.0

    @property
    def drift(self) -> list[Drift]:
        return [d for t in self.types for d in t.drift]

    @property
    def clean(self) -> bool:
        return not self.drift

    @property
    def unrepaired(self) -> list[Drift]:
        return [d for d in self.drift if not d.repaired]

    def to_json(self) -> dict[str, Any]:
        """The fields, with the drift counted (the list is per type)."""
        return {
            **asdict(self),
            "clean": self.clean,
            "drift": len(self.drift),
            "unrepaired": len(self.unrepaired),
            "seconds": round(self.seconds, 3),
            "types": [t.to_json() for t in self.types],
        }


@dataclass(frozen=True, slots=True)
class _Row:
    data: dict[str, Any]
    marker: int
    deleted: bool


def _rows(engine: Engine, object_type: str, account: str) -> dict[str, _Row]:
    """The mirror's rows of one type (deleted ones included)."""
    mirror_table = table_for(object_type)
    table = mirror_table.table
    query = select(table.c.id, table.c.data, table.c.marker, table.c.deleted).where(
        table.c.account == account
    )
    if mirror_table is GENERIC:
        query = query.where(table.c.object == object_type)
    rows: dict[str, _Row] = {}
    with connect(engine, readonly=True) as conn:
        for object_id, data, marker, deleted in conn.execute(query):
            data = dict(data)
            if data.get("object", object_type) != object_type:
                continue  # a typed table shared by several types
            rows[object_id] = _Row(data, int(marker), bool(deleted))
    return rows


def _listable(object_type: str, row: _Row) -> bool:
    """Whether Stripe's list would show this existing row (a payment method
    detached from its customer is listed nowhere)."""
    if LISTERS[object_type].per_customer:
        return bool(row.data.get("customer"))
    return True


def differing_fields(stripe: dict[str, Any], mirror: dict[str, Any]) -> tuple[str, ...]:
    """The top-level fields whose values differ (sorted)."""
    return tuple(sorted(k for k in set(stripe) | set(mirror) if stripe.get(k) != mirror.get(k)))


class _Repairer:
    """Writes Stripe's state over drifted rows, re-reading where needed."""

    def __init__(self, engine: Engine, reader: Reader, sleep: Callable[[float], None]) -> None:
        self.engine = engine
        self.reader = reader
        self.sleep = sleep

    def write(
        self, object_type: str, object_id: str, data: dict[str, Any] | None, marker: int
    ) -> bool:
        state = state_from_fetch(
            data,
            object_type=object_type,
            object_id=object_id,
            account=self.reader.account,
            livemode=bool((data or {}).get("livemode")),
            fetched_at=marker,
        )
        with connect(self.engine) as conn:
            return apply_states(conn, [state], now=utcnow()).applied == 1

    def repair(
        self,
        object_type: str,
        object_id: str,
        data: dict[str, Any] | None,
        marker: int | None,
        held_marker: int | None,
    ) -> bool:
        """Write ``data`` (read at ``marker``; None: read it now); when the row
        cannot be ordered against it, wait for a later second and read again."""
        if marker is None:
            data, marker = self.reader.retrieve(object_type, object_id)
        if self.write(object_type, object_id, data, marker):
            return True
        if held_marker is not None:
            wait = held_marker + FETCH_SLACK_SECONDS + 1 - self.reader.clock()
            if wait > MAX_REPAIR_WAIT_SECONDS:
                return False  # the row claims a future state: leave it to a person
            if wait > 0:
                self.sleep(wait)
        data, marker = self.reader.retrieve(object_type, object_id)
        return self.write(object_type, object_id, data, marker)


def _check_listing(
    engine: Engine, reader: Reader, object_type: str, repairer: _Repairer | None
) -> TypeDrift:
    report = TypeDrift(object_type)
    started = int(reader.clock())
    listed: dict[str, tuple[dict[str, Any], int]] = {}
    for page in pages(reader, object_type):
        for item in page.items:
            listed[str(item["id"])] = (item, page.marker)
    rows = _rows(engine, object_type, reader.account or "")
    report.checked = len(listed)
    report.mirrored = sum(1 for row in rows.values() if not row.deleted)
    for object_id, (data, marker) in listed.items():
        row = rows.get(object_id)
        if row is not None and row.marker > marker:
            report.changed += 1
            continue
        if row is None or row.deleted:
            kind, fields = "missing", _NO_FIELDS
        else:
            fields = differing_fields(data, row.data)
            if not fields:
                continue
            kind = "differs"
        repaired = repairer is not None and repairer.repair(
            object_type, object_id, data, marker, None if row is None else row.marker
        )
        report.drift.append(Drift(object_type, object_id, kind, fields, repaired))
    for object_id, row in rows.items():
        if row.deleted or object_id in listed or not _listable(object_type, row):
            continue
        if row.marker > started:
            report.changed += 1
            continue
        repaired = repairer is not None and repairer.repair(
            object_type, object_id, None, None, row.marker
        )
        report.drift.append(Drift(object_type, object_id, "extra", (), repaired))
    return report


def _check_sample(
    engine: Engine,
    reader: Reader,
    types: Sequence[str],
    sample: int,
    repairer: _Repairer | None,
    rng: random.Random,
) -> list[TypeDrift]:
    reports = {object_type: TypeDrift(object_type) for object_type in types}
    candidates: list[tuple[str, str, _Row]] = []
    for object_type in types:
        rows = _rows(engine, object_type, reader.account or "")
        live = [(object_type, i, r) for i, r in rows.items() if not r.deleted]
        reports[object_type].mirrored = len(live)
        candidates.extend(live)
    for object_type, object_id, row in rng.sample(candidates, min(sample, len(candidates))):
        report = reports[object_type]
        data, marker = reader.retrieve(object_type, object_id)
        report.checked += 1
        if row.marker > marker:
            report.changed += 1
            continue
        if data is None:
            kind, fields = "extra", _NO_FIELDS
        else:
            fields = differing_fields(data, row.data)
            if not fields:
                continue
            kind = "differs"
        repaired = repairer is not None and repairer.repair(
            object_type, object_id, data, marker, row.marker
        )
        report.drift.append(Drift(object_type, object_id, kind, fields, repaired))
    return list(reports.values())


def check_drift(
    engine: Engine,
    reader: Reader,
    types: Sequence[str] | None = None,
    *,
    sample: int | None = None,
    repair: bool = False,
    seed: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    actor: str = "stripeline verify",
) -> DriftReport:
    """Compare the mirror's ``types`` (default: every listable type) with
    Stripe; ``sample=N`` retrieves N random mirrored objects instead of
    listing; ``repair`` writes Stripe's state over every drift found.

    The report is kept as the last one (``sync.history``, the console's Sync
    page) under ``actor``.

    Raises:
        ValueError: an unknown type or a negative sample.
        StripeAPIError: Stripe kept refusing a read.
        sqlalchemy.exc.SQLAlchemyError: the database failed.
    """
    chosen = list(types) if types else list(LISTERS)
    for object_type in chosen:
        if object_type not in LISTERS:
            raise ValueError(f"unknown object type {object_type!r}; known: {', '.join(LISTERS)}")
    if sample is not None and sample < 0:
        raise ValueError("sample must be 0 or more")
    started = time.monotonic()
    reads_before = reader.reads
    repairer = _Repairer(engine, reader, sleep) if repair else None
    report = DriftReport(sample=sample, repair=repair)
    if sample is not None:
        report.types = _check_sample(
            engine,
            reader,
            chosen,
            sample,
            repairer,
            random.Random(seed),  # noqa: S311
        )
    else:
        report.types = [
            _check_listing(engine, reader, object_type, repairer) for object_type in chosen
        ]
    report.reads = reader.reads - reads_before
    report.seconds = time.monotonic() - started
    for drift in report.drift:
        log.warning(
            "mirror drift",
            action="verify_drift",
            object_id=drift.id,
            object_type=drift.object_type,
            kind=drift.kind,
            fields=list(drift.fields),
            repaired=drift.repaired,
        )
    log.info(
        "verify done",
        action="verify_done",
        drift=len(report.drift),
        unrepaired=len(report.unrepaired),
        reads=report.reads,
    )
    _keep(engine, report, actor)
    return report


def _keep(engine: Engine, report: DriftReport, actor: str) -> None:
    with connect(engine) as conn:
        save_verify_report(conn, report.to_json(), actor=actor, now=utcnow())


def repair_drift(
    engine: Engine,
    reader: Reader,
    objects: Sequence[tuple[str, str, str, Sequence[str]]],
    *,
    actor: str,
    sleep: Callable[[float], None] = time.sleep,
) -> DriftReport:
    """Read each drifted object again and write Stripe's state over the
    mirror's: ``objects`` as (type, id, kind, fields) from a stored report.
    The result (each object repaired or not) is kept as the last report.

    Raises:
        ValueError: an unknown object type.
        StripeAPIError: Stripe kept refusing a read.
    """
    started = time.monotonic()
    reads_before = reader.reads
    repairer = _Repairer(engine, reader, sleep)
    report = DriftReport(sample=None, repair=True)
    by_type: dict[str, TypeDrift] = {}
    for object_type, object_id, kind, fields in objects:
        if object_type not in LISTERS:
            raise ValueError(f"unknown object type {object_type!r}")
        held = _rows_of(engine, object_type, object_id, reader.account or "")
        repaired = repairer.repair(object_type, object_id, None, None, held)
        entry = by_type.setdefault(object_type, TypeDrift(object_type))
        entry.checked += 1
        entry.drift.append(Drift(object_type, object_id, kind, tuple(fields), repaired))
        log.info(
            "drift repaired" if repaired else "drift not repaired",
            action="verify_repair",
            object_id=object_id,
            object_type=object_type,
            repaired=repaired,
        )
    report.types = list(by_type.values())
    report.reads = reader.reads - reads_before
    report.seconds = time.monotonic() - started
    _keep(engine, report, actor)
    return report


def _rows_of(engine: Engine, object_type: str, object_id: str, account: str) -> int | None:
    """The marker of the mirror's row of one object (None: no row)."""
    table = table_for(object_type).table
    with connect(engine, readonly=True) as conn:
        marker = conn.execute(
            select(table.c.marker).where(table.c.account == account, table.c.id == object_id)
        ).scalar()
    return None if marker is None else int(marker)
