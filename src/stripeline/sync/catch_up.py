"""Catch-up: list ``/v1/events`` and insert what the inbox lacks.

Webhooks are the fast path; catch-up is the safety net for deliveries that
never came (an outage of ours, a disabled endpoint, a lost network). It pages
the Events API **oldest first**, through a ``stripeline.gateway.Reader`` (the
one rate-limited read path), from a cursor saved in ``stripeline_cursors``
(name ``events``) and stores each event it does not hold yet with source
``catch-up``, exactly as the webhook route would. Each page is written in one
transaction together with the cursor that follows it, so an interruption
loses nothing and repeats nothing.

Stripe lists newest first; walking forward means ``ending_before=<cursor>``,
whose page holds the events just newer than the cursor (still newest first,
so each page is reversed). On a first run there is no cursor: the walk goes
back (``starting_after``, filtered by ``created[gte]`` when ``since`` is
given) to the oldest page, and forward from there. Stripe keeps events for
30 days, so a cursor older than 25 days is warned about; a cursor Stripe no
longer knows restarts the walk from the cursor's time (already stored events
are skipped, not stored twice).

``run_catch_up_forever`` (and ``run_catch_up_forever_async``) repeat this in
the background for ``stripeline serve``: they never raise, and when Stripe
or the database is unreachable they log, back off with jitter and try again.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, text

from stripeline import inbox
from stripeline.core.backoff import exponential
from stripeline.core.envelope import parse_envelope
from stripeline.db import connect
from stripeline.errors import EnvelopeError, StripeAPIError, StripeInvalidRequestError
from stripeline.inbox import utcnow
from stripeline.log import get_logger
from stripeline.settings import Mode
from stripeline.sync.cursors import COVERED_CURSOR, catch_up_gap, read_cursor, save_cursor
from stripeline.sync.history import record_catch_up

if TYPE_CHECKING:
    from stripeline.gateway.reader import Reader

#: Events per request (Stripe's maximum).
PAGE_SIZE = 100
#: How long Stripe keeps events.
EVENT_RETENTION = timedelta(days=30)
#: A cursor older than this is close to falling out of Stripe's retention.
CURSOR_WARN_AGE = timedelta(days=25)
#: The gap (seconds since that moment) at which the loop raises its alarm:
#: past 30 days Stripe no longer lists the events catch-up would need.
GAP_ALARM_SECONDS = CURSOR_WARN_AGE.total_seconds()
#: Seconds between two catch-ups when all is well (webhooks do the real-time work).
DEFAULT_INTERVAL = 300.0
#: First and largest wait after a failed catch-up (doubling, with jitter).
DEFAULT_BACKOFF_INITIAL = 5.0
DEFAULT_BACKOFF_MAX = 600.0
#: A key for ``pg_try_advisory_lock``: one catch-up at a time per database.
_ADVISORY_LOCK_KEY = 0x5354_4C43  # "STLC"

log = get_logger("stripeline.sync")


@dataclass(frozen=True, slots=True)
class CatchUpResult:
    """What one catch-up did."""

    #: Pages fetched from ``/v1/events`` (the backward walk of a first run included).
    pages: int
    #: Events listed in the pages stored.
    seen: int
    #: Events new to the inbox, stored with source ``catch-up``.
    inserted: int
    #: Of those, events of the other mode (test vs live), stored as ``ignored``.
    ignored: int
    #: The cursor after this run: the newest event listed so far, and its ``created``.
    cursor: str | None
    cursor_created: int | None
    #: The saved cursor was older than ``CURSOR_WARN_AGE`` when the run began.
    cursor_was_old: bool = False
    #: Another process held the catch-up lock (PostgreSQL); nothing was done.
    skipped: bool = False


def _page(reader: Reader, params: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """One page of ``/v1/events`` as Stripe sent it: raw dicts, newest first."""
    items, has_more, _ = reader.list_page("events", params)
    return items, has_more


def _oldest_page(
    reader: Reader, *, since: int | None, page_size: int
) -> tuple[list[dict[str, Any]], int]:
    """Walk back to the oldest page (first run); return it and the pages fetched."""
    params: dict[str, Any] = {"limit": page_size}
    if since is not None:
        params["created"] = {"gte": since}
    pages = 0
    page: list[dict[str, Any]] = []
    while True:
        items, has_more = _page(reader, params)
        pages += 1
        if items:
            page = items
        if not has_more or not items:
            return page, pages
        params["starting_after"] = items[-1]["id"]


def _store_page(
    engine: Engine,
    items: list[dict[str, Any]],
    *,
    livemode: bool,
    now: datetime,
) -> tuple[int, int]:
    """Store a page's events the inbox lacks and advance the cursor, in one
    transaction. ``items`` is newest first, as listed. Returns (inserted, ignored)."""
    oldest_first = list(reversed(items))
    incoming: list[inbox.IncomingEvent] = []
    for position, item in enumerate(oldest_first):
        try:
            envelope, _ = parse_envelope(item)
        except EnvelopeError as exc:
            log.warning(
                "catch-up skipped an event that is not a snapshot event",
                action="catch_up_event_skipped",
                event_id=item.get("id"),
                reason=exc.reason,
            )
            continue
        incoming.append(
            inbox.IncomingEvent(
                envelope=envelope,
                payload=json.dumps(item, separators=(",", ":")).encode(),
                source="catch-up",
                # Received one after the other, oldest first: the inbox's
                # received_at keeps that order inside a page too.
                received_at=now + timedelta(microseconds=position),
                status="pending" if envelope.livemode == livemode else "ignored",
            )
        )
    newest = items[0]
    with connect(engine) as conn:
        known = inbox.known_ids(conn, [item.envelope.id for item in incoming])
        new = [item for item in incoming if item.envelope.id not in known]
        if new:
            inbox.store(conn, new)
        save_cursor(conn, str(newest["id"]), int(newest["created"]), now=now)
    for item in new:
        if item.status == "ignored":
            log.warning(
                "event of the other mode stored as ignored",
                action="catch_up_event_ignored",
                event_id=item.envelope.id,
                event_type=item.envelope.type,
            )
    return len(new), sum(1 for item in new if item.status == "ignored")


@contextmanager
def _single_runner(engine: Engine) -> Iterator[bool]:
    """On PostgreSQL, hold an advisory lock so that one catch-up runs at a time
    however many ``serve`` processes there are; yields False when another has it.
    (SQLite serialises writers already; two runs would only skip known events.)"""
    if engine.dialect.name != "postgresql":
        yield True
        return
    with engine.connect() as conn:
        got = bool(
            conn.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": _ADVISORY_LOCK_KEY}
            ).scalar_one()
        )
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _ADVISORY_LOCK_KEY})
                conn.commit()


def catch_up(
    engine: Engine,
    reader: Reader,
    *,
    mode: Mode,
    since: int | datetime | None = None,
    now: datetime | None = None,
    page_size: int = PAGE_SIZE,
) -> CatchUpResult:
    """List ``/v1/events`` from the saved cursor, oldest first, through
    ``reader`` (its rate limit and retries), and store what
    the inbox lacks (source ``catch-up``; events whose mode is not ``mode``
    are stored ``ignored``). ``since`` (Unix time or aware datetime) bounds a
    first run, when no cursor is saved; without it a first run takes every
    event Stripe still keeps. ``now`` fixes the clock (tests).

    Raises:
        StripeAPIError: Stripe answered with an error or could not be reached;
            every page stored before that is kept, cursor included.
        sqlalchemy.exc.SQLAlchemyError: the database failed.
    """
    if not 1 <= page_size <= PAGE_SIZE:
        raise ValueError(f"page_size must be between 1 and {PAGE_SIZE}")
    since_ts = int(since.timestamp()) if isinstance(since, datetime) else since
    livemode = mode == "live"

    def clock() -> datetime:
        return now or utcnow()

    with _single_runner(engine) as runner:
        if not runner:
            log.info("another process is catching up", action="catch_up_skipped")
            return CatchUpResult(0, 0, 0, 0, None, None, skipped=True)
        run_started = clock()
        progress = {"pages": 0, "seen": 0, "inserted": 0, "ignored": 0}

        def run() -> CatchUpResult:
            with connect(engine, readonly=True) as conn:
                saved = read_cursor(conn)
            pages = seen = inserted = ignored = 0
            cursor = saved.event_id if saved else None
            cursor_created = saved.created if saved else None
            cursor_was_old = False
            if saved is not None and saved.created is not None:
                age = clock() - datetime.fromtimestamp(saved.created, UTC)
                if age > CURSOR_WARN_AGE:
                    cursor_was_old = True
                    log.warning(
                        "catch-up cursor is close to Stripe's 30-day event retention",
                        action="catch_up_cursor_old",
                        cursor=cursor,
                        age_days=round(age.total_seconds() / 86400, 1),
                    )

            def take(items: list[dict[str, Any]]) -> None:
                nonlocal seen, inserted, ignored, cursor, cursor_created
                added, other_mode = _store_page(engine, items, livemode=livemode, now=clock())
                seen += len(items)
                inserted += added
                ignored += other_mode
                cursor, cursor_created = str(items[0]["id"]), int(items[0]["created"])
                progress.update(pages=pages, seen=seen, inserted=inserted, ignored=ignored)
                log.info(
                    "catch-up page stored",
                    action="catch_up_page",
                    listed=len(items),
                    inserted=added,
                    cursor=cursor,
                )

            if cursor is None:
                first, fetched = _oldest_page(reader, since=since_ts, page_size=page_size)
                pages += fetched
                if first:
                    take(first)
            while cursor is not None:
                try:
                    items, has_more = _page(reader, {"limit": page_size, "ending_before": cursor})
                except StripeInvalidRequestError as exc:
                    if exc.param != "ending_before" and exc.code != "resource_missing":
                        raise
                    # The cursor's event is gone (past retention): restart from its time.
                    log.warning(
                        "catch-up cursor is no longer known to Stripe; restarting from its time",
                        action="catch_up_cursor_lost",
                        cursor=cursor,
                    )
                    first, fetched = _oldest_page(reader, since=cursor_created, page_size=page_size)
                    pages += fetched
                    if not first:
                        break
                    take(first)
                    continue
                pages += 1
                if items:
                    take(items)
                if not has_more or not items:
                    break
            with connect(engine) as conn:
                save_cursor(
                    conn,
                    cursor or "",
                    int(run_started.timestamp()),
                    now=clock(),
                    name=COVERED_CURSOR,
                )
                record_catch_up(
                    conn,
                    started_at=run_started,
                    now=clock(),
                    pages=pages,
                    seen=seen,
                    inserted=inserted,
                    ignored=ignored,
                    cursor_was_old=cursor_was_old,
                )
            result = CatchUpResult(
                pages=pages,
                seen=seen,
                inserted=inserted,
                ignored=ignored,
                cursor=cursor,
                cursor_created=cursor_created,
                cursor_was_old=cursor_was_old,
            )
            log.info("catch-up done", action="catch_up_done", **asdict(result))
            return result

        try:
            return run()
        except Exception as exc:
            # Record the failed run (what it stored is kept), then let it raise.
            try:
                with connect(engine) as conn:
                    record_catch_up(
                        conn,
                        started_at=run_started,
                        now=clock(),
                        error=f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}",
                        pages=progress["pages"],
                        seen=progress["seen"],
                        inserted=progress["inserted"],
                        ignored=progress["ignored"],
                    )
            except Exception:  # the run's own error is the one to raise
                log.warning("catch-up history not recorded", action="catch_up_history_failed")
            raise


def check_gap(engine: Engine, *, now: datetime | None = None) -> float | None:
    """Read the catch-up gap and raise the alarm (an error log line with
    ``action=catch_up_gap_alarm``) when it nears Stripe's event retention.
    Never raises; the gap is also the gauge ``stripeline_catch_up_gap_seconds``."""
    try:
        with connect(engine, readonly=True) as conn:
            gap = catch_up_gap(conn, now or utcnow())
    except Exception:  # the database: catch-up's own failure is logged already
        return None
    if gap is not None and gap >= GAP_ALARM_SECONDS:
        log.error(
            "catch-up has not covered the Events API for too long: "
            "Stripe drops events after 30 days; fix catch-up, then run "
            "`stripeline sync objects` and `stripeline verify`",
            action="catch_up_gap_alarm",
            gap_seconds=round(gap),
            gap_days=round(gap / 86400, 1),
            retention_days=EVENT_RETENTION.days,
        )
    return gap


def next_backoff(
    failures: int,
    *,
    initial: float = DEFAULT_BACKOFF_INITIAL,
    maximum: float = DEFAULT_BACKOFF_MAX,
) -> float:
    """Seconds to wait after ``failures`` consecutive failures: doubling from
    ``initial`` up to ``maximum``, spread over its upper half (jitter) so that
    many processes do not come back at once."""
    return exponential(failures, initial=initial, maximum=maximum)


def _attempt(run: Callable[[], CatchUpResult], failures: int) -> tuple[CatchUpResult | None, int]:
    """One catch-up that never raises; returns its result (None on failure)
    and the new count of consecutive failures."""
    try:
        return run(), 0
    except StripeAPIError as exc:
        log.warning(
            "catch-up failed: Stripe did not answer as expected; will retry",
            action="catch_up_failed",
            error=repr(exc),
            retryable=exc.retryable,
            failures=failures + 1,
        )
    except Exception as exc:
        # The database, most likely; serve must keep running and retry.
        log.error(
            "catch-up failed; will retry",
            action="catch_up_failed",
            error=f"{type(exc).__name__}: {str(exc)[:500]}",
            failures=failures + 1,
        )
    return None, failures + 1


def run_catch_up_forever(
    engine: Engine,
    reader: Reader,
    *,
    mode: Mode,
    stop: threading.Event,
    since: int | datetime | None = None,
    interval: float = DEFAULT_INTERVAL,
    backoff_initial: float = DEFAULT_BACKOFF_INITIAL,
    backoff_max: float = DEFAULT_BACKOFF_MAX,
) -> None:
    """Catch up now and every ``interval`` seconds until ``stop`` is set.

    Meant for a background thread of ``stripeline serve``. Never raises: a
    failure (Stripe or the database unreachable) is logged and retried after
    ``next_backoff``.
    """
    failures = 0
    log.info("catch-up loop started", action="catch_up_loop_started", interval=interval)
    while not stop.is_set():
        result, failures = _attempt(
            lambda: catch_up(engine, reader, mode=mode, since=since), failures
        )
        check_gap(engine)
        delay = (
            interval
            if result is not None
            else next_backoff(failures, initial=backoff_initial, maximum=backoff_max)
        )
        stop.wait(delay)
    log.info("catch-up loop stopped", action="catch_up_loop_stopped")


async def run_catch_up_forever_async(
    engine: Engine,
    reader: Reader,
    *,
    mode: Mode,
    since: int | datetime | None = None,
    interval: float = DEFAULT_INTERVAL,
    backoff_initial: float = DEFAULT_BACKOFF_INITIAL,
    backoff_max: float = DEFAULT_BACKOFF_MAX,
) -> None:
    """``run_catch_up_forever`` as an asyncio task; cancel the task to stop it.

    Each catch-up runs in a worker thread (the SDK and the database calls
    block), so the event loop keeps serving webhooks meanwhile.
    """
    failures = 0
    log.info("catch-up loop started", action="catch_up_loop_started", interval=interval)
    try:
        while True:
            result, failures = await asyncio.to_thread(
                _attempt, lambda: catch_up(engine, reader, mode=mode, since=since), failures
            )
            await asyncio.to_thread(check_gap, engine)
            delay = (
                interval
                if result is not None
                else next_backoff(failures, initial=backoff_initial, maximum=backoff_max)
            )
            await asyncio.sleep(delay)
    finally:
        log.info("catch-up loop stopped", action="catch_up_loop_stopped")
