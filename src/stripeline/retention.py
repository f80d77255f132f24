"""Inbox retention: remove the payloads of events processed long ago.

The inbox keeps every verified event whole (``stripeline_events.payload``),
personal data included. ``prune`` removes the events ``processed`` (or
``ignored``: of the other mode, never to be processed) whose last delivery
is older than a cut, with their deliveries and attempts; events ``pending``,
``processing``, ``failed`` or ``dead`` are never removed. The cut is at least
``MIN_AGE`` (7 days): Stripe redelivers an event for up to 3 days, and the
inbox's row is what recognises a redelivery as a duplicate.

``stripeline events prune --older-than 90d`` runs it once;
``STRIPELINE_INBOX_RETENTION_DAYS`` makes ``stripeline serve`` run it every
``PRUNE_INTERVAL`` seconds (``start_pruning``).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, cast

import structlog
from sqlalchemy import ColumnElement, Engine, Table, func, select

from stripeline.db import models
from stripeline.db.engine import connect
from stripeline.errors import RetentionTooShort
from stripeline.inbox import utcnow

if TYPE_CHECKING:
    from stripeline.settings import Settings

__all__ = [
    "MIN_AGE",
    "PRUNABLE_STATUSES",
    "PRUNE_INTERVAL",
    "PruneResult",
    "check_age",
    "parse_age",
    "prune",
    "start_pruning",
]

log = structlog.get_logger("stripeline.retention")

#: The shortest retention: Stripe redelivers for 3 days; deduplication needs the rows.
MIN_AGE = timedelta(days=7)
#: Only these are ever removed.
PRUNABLE_STATUSES = ("processed", "ignored")
#: Seconds between two prunes inside ``stripeline serve``.
PRUNE_INTERVAL = 3600.0
#: Events removed per transaction.
BATCH = 500

events = cast(Table, models.Event.__table__)
deliveries = cast(Table, models.Delivery.__table__)
attempts = cast(Table, models.Attempt.__table__)

_AGE = re.compile(r"^\s*(\d+)\s*([dwh]?)\s*$")
_UNIT = {"": "days", "d": "days", "w": "weeks", "h": "hours"}


@dataclass(frozen=True)
class PruneResult:
    """What ``prune`` removed (or, ``dry_run``, would remove)."""

    events: int
    deliveries: int
    attempts: int
    #: Events whose last delivery is before this were removed.
    before: datetime
    dry_run: bool


def parse_age(text: str) -> timedelta:
    """``90d``, ``2w``, ``240h`` or ``90`` (days) as a ``timedelta``.

    Raises:
        ValueError: not such an age.
    """
    match = _AGE.match(text.lower())
    if match is None:
        raise ValueError(f"{text!r} is not an age: give days (90d), weeks (2w) or hours (240h)")
    return timedelta(**{_UNIT[match.group(2)]: int(match.group(1))})


def check_age(age: timedelta) -> None:
    """Raises:
    RetentionTooShort: ``age`` is under ``MIN_AGE``."""
    if age < MIN_AGE:
        raise RetentionTooShort(
            f"events are kept at least {MIN_AGE.days} days: Stripe redelivers an event for up "
            "to 3 days and the inbox's rows are what recognises a redelivery as a duplicate "
            "(a pruned event delivered again would be processed again)"
        )


def _prunable(before: datetime) -> list[ColumnElement[bool]]:
    return [events.c.status.in_(PRUNABLE_STATUSES), events.c.last_received_at < before]


def prune(
    engine: Engine,
    older_than: timedelta,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PruneResult:
    """Remove the ``processed`` and ``ignored`` events last delivered more
    than ``older_than`` ago, with their deliveries and attempts, a batch per
    transaction; return how many (``dry_run``: count only).

    Raises:
        RetentionTooShort: ``older_than`` is under ``MIN_AGE``.
    """
    check_age(older_than)
    before = (now or utcnow()) - older_than
    if dry_run:
        with connect(engine, readonly=True) as conn:
            ids = select(events.c.id).where(*_prunable(before)).scalar_subquery()
            counted = [
                conn.execute(select(func.count()).select_from(events).where(*_prunable(before))),
                conn.execute(
                    select(func.count())
                    .select_from(deliveries)
                    .where(deliveries.c.event_id.in_(ids))
                ),
                conn.execute(
                    select(func.count()).select_from(attempts).where(attempts.c.event_id.in_(ids))
                ),
            ]
            n_events, n_deliveries, n_attempts = (int(r.scalar_one()) for r in counted)
        return PruneResult(n_events, n_deliveries, n_attempts, before, True)
    n_events = n_deliveries = n_attempts = 0
    while True:
        with connect(engine) as conn:
            batch = list(
                conn.execute(
                    select(events.c.id).where(*_prunable(before)).order_by(events.c.id).limit(BATCH)
                ).scalars()
            )
            if not batch:
                break
            # The status is checked again as the rows go: an event replayed
            # meanwhile (pending again) stays, with its history.
            gone = list(
                conn.execute(
                    events.delete()
                    .where(events.c.id.in_(batch), *_prunable(before))
                    .returning(events.c.id)
                ).scalars()
            )
            if gone:
                n_deliveries += (
                    conn.execute(deliveries.delete().where(deliveries.c.event_id.in_(gone)))
                ).rowcount
                n_attempts += (
                    conn.execute(attempts.delete().where(attempts.c.event_id.in_(gone)))
                ).rowcount
            n_events += len(gone)
        if len(batch) < BATCH:
            break
    log.info(
        "inbox_pruned",
        action="inbox_pruned",
        events=n_events,
        deliveries=n_deliveries,
        attempts=n_attempts,
        before=before.isoformat(),
    )
    return PruneResult(n_events, n_deliveries, n_attempts, before, False)


def start_pruning(
    engine: Engine,
    settings: Settings,
    stop: threading.Event,
    *,
    interval: float = PRUNE_INTERVAL,
) -> threading.Thread | None:
    """With ``settings.inbox_retention_days`` set, a daemon thread that prunes
    the inbox at once and then every ``interval`` seconds until ``stop`` is
    set; None when retention is off. A failed prune is logged and tried
    again at the next interval."""
    days = settings.inbox_retention_days
    if days is None:
        return None
    age = timedelta(days=days)
    check_age(age)

    def loop() -> None:
        while not stop.is_set():
            try:
                prune(engine, age)
            except Exception as exc:  # the next interval tries again
                log.warning(
                    "inbox_prune_failed",
                    action="inbox_prune_failed",
                    error=f"{type(exc).__name__}: {str(exc)[:300]}",
                )
            stop.wait(interval)

    thread = threading.Thread(target=loop, name="stripeline-retention", daemon=True)
    thread.start()
    return thread
