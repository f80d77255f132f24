"""Backfill: list every object Stripe holds and write it into the mirror.

``backfill`` pages through each object type (``stripeline.gateway.pages``:
canceled subscriptions included, every invoice line, archived products and
prices) and applies each page with ``mirror.apply_states`` as states read
when the page's read started, so a backfill never overwrites a newer state
an event brought meanwhile, and a rerun changes nothing that is current.

Each page is written in one transaction together with the type's cursor in
``stripeline_cursors`` (``backfill:customer``…), so an interruption loses at
most the page being read. Cursors belong to a *run* (``backfill:run``, whose
time stamps each type's cursor): a type that finished records it, and a run
resumed later skips the types it finished and goes on from the cursor of the
others. Once every type asked for has finished, the next backfill starts a
new run from the beginning.

Types run in parallel threads, all within one token bucket (``Reader``) set
below Stripe's limit for the key's mode (``Settings.reads_per_second``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Engine

from stripeline.db import connect
from stripeline.errors import StripeAPIError
from stripeline.gateway.reader import LISTERS, PAGE_SIZE, Page, Reader, pages
from stripeline.inbox import utcnow
from stripeline.log import get_logger
from stripeline.mirror import refetch
from stripeline.mirror._store import apply_states, state_from_fetch
from stripeline.sync.cursors import read_cursor, save_cursor
from stripeline.sync.history import record_backfill_page

#: ``stripeline_cursors`` names: the run, and one cursor per type (``backfill:invoice``).
RUN_CURSOR = "backfill:run"
CURSOR_PREFIX = "backfill:"
#: A type's cursor value once it finished in its run.
FINISHED = "<finished>"
#: Types listed at once (each a thread; all share one rate limit).
DEFAULT_CONCURRENCY = 4

log = get_logger("stripeline.sync.backfill")


def cursor_name(object_type: str) -> str:
    return CURSOR_PREFIX + object_type


@dataclass(frozen=True, slots=True)
class Progress:
    """Where one type's backfill stands, after each page."""

    object_type: str
    objects: int
    pages: int
    finished: bool


@dataclass
class TypeResult:
    """What a backfill did for one object type."""

    object_type: str
    #: finished | skipped (finished earlier in this run) | stopped | failed
    status: str = "stopped"
    objects: int = 0
    pages: int = 0
    #: States written (newer than what the mirror held).
    applied: int = 0
    #: States that tied with the mirror's and were queued for a re-fetch.
    ties: int = 0
    #: The cursor the type resumed from (None: from the beginning).
    resumed_after: str | None = None
    error: str | None = None


@dataclass
class BackfillResult:
    """What one backfill did."""

    #: The run (its start, Unix seconds) the types belong to.
    run: int
    #: A run left unfinished before was resumed.
    resumed: bool
    types: dict[str, TypeResult] = field(default_factory=dict)
    #: API requests made (retries included) and 429 answers received.
    reads: int = 0
    rate_limited: int = 0
    seconds: float = 0.0

    @property
    def objects(self) -> int:
        return sum(t.objects for t in self.types.values())

    @property
    def complete(self) -> bool:
        """Every type finished (in this call or earlier in the run)."""
        return all(t.status in ("finished", "skipped") for t in self.types.values())

    def to_json(self) -> dict[str, Any]:
        """The fields (``types`` as a list), and the totals they add up to."""
        return {
            **asdict(self),
            "complete": self.complete,
            "objects": self.objects,
            "seconds": round(self.seconds, 3),
            "objects_per_second": round(self.objects / self.seconds, 1) if self.seconds else None,
            "types": [asdict(t) for t in self.types.values()],
        }


def _open_run(engine: Engine, types: Sequence[str], *, restart: bool) -> tuple[int, bool]:
    """The run to work in: the saved one while some type asked for has not
    finished in it, else a new one. Returns (run, resumed)."""
    with connect(engine) as conn:
        saved = read_cursor(conn, RUN_CURSOR)
        if saved is not None and saved.created is not None and not restart:
            for object_type in types:
                row = read_cursor(conn, cursor_name(object_type))
                if row is None or row.created != saved.created or row.event_id != FINISHED:
                    return saved.created, True
        run = int(time.time())
        if saved is not None and saved.created is not None:
            run = max(run, saved.created + 1)
        save_cursor(conn, str(run), run, now=utcnow(), name=RUN_CURSOR)
    return run, False


def _apply_page(
    engine: Engine,
    page: Page,
    *,
    object_type: str,
    account: str | None,
    run: int,
    finished: bool,
    result: TypeResult,
    coalesce_seconds: float,
) -> None:
    states = [
        state_from_fetch(
            item,
            object_type=str(item.get("object") or object_type),
            object_id=str(item["id"]),
            account=account,
            livemode=bool(item.get("livemode")),
            fetched_at=page.marker,
        )
        for item in page.items
    ]
    now = utcnow()
    with connect(engine) as conn:
        applied = apply_states(conn, states, now=now)
        if applied.ties:
            # Same second, different data: Stripe settles it (the worker re-fetches).
            refetch.request(
                conn,
                [refetch.Wanted(t.account, t.id, t.object_type, t.livemode) for t in applied.ties],
                now=now,
                window=coalesce_seconds,
            )
        value = FINISHED if finished else (page.cursor or "")
        save_cursor(conn, value, run, now=now, name=cursor_name(object_type))
        if page.items:
            record_backfill_page(conn, object_type, run=run, objects=len(page.items), now=now)
    result.applied += applied.applied
    result.ties += len(applied.ties)


def _backfill_type(
    engine: Engine,
    reader: Reader,
    object_type: str,
    *,
    run: int,
    stop: threading.Event,
    on_page: Callable[[Progress], None] | None,
    page_size: int,
    coalesce_seconds: float,
) -> TypeResult:
    result = TypeResult(object_type)
    with connect(engine, readonly=True) as conn:
        saved = read_cursor(conn, cursor_name(object_type))
    if saved is not None and saved.created == run:
        if saved.event_id == FINISHED:
            result.status = "skipped"
            return result
        result.resumed_after = saved.event_id or None

    def report(finished: bool) -> None:
        if on_page is not None:
            on_page(Progress(object_type, result.objects, result.pages, finished))

    try:
        listing = pages(reader, object_type, after=result.resumed_after, page_size=page_size)
        page = next(listing, None)
        while page is not None:
            if stop.is_set():
                return result
            following = next(listing, None)
            _apply_page(
                engine,
                page,
                object_type=object_type,
                account=reader.account,
                run=run,
                finished=following is None,
                result=result,
                coalesce_seconds=coalesce_seconds,
            )
            result.pages += 1
            result.objects += len(page.items)
            report(following is None)
            page = following
        if result.pages == 0:
            # Nothing (more) to list: record that the type is finished.
            _apply_page(
                engine,
                Page([], int(reader.clock()), None),
                object_type=object_type,
                account=reader.account,
                run=run,
                finished=True,
                result=result,
                coalesce_seconds=coalesce_seconds,
            )
            report(True)
    except StripeAPIError as exc:
        result.status = "failed"
        result.error = f"{type(exc).__name__}: {exc.message}"
        log.warning(
            "backfill of a type failed; its cursor is kept for the next run",
            action="backfill_type_failed",
            object_type=object_type,
            error=result.error,
        )
        return result
    result.status = "finished"
    log.info(
        "backfill of a type finished",
        action="backfill_type_finished",
        object_type=object_type,
        objects=result.objects,
        pages=result.pages,
    )
    return result


def backfill(
    engine: Engine,
    reader: Reader,
    types: Sequence[str] | None = None,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    restart: bool = False,
    stop: threading.Event | None = None,
    on_page: Callable[[Progress], None] | None = None,
    page_size: int = PAGE_SIZE,
    coalesce_seconds: float = refetch.DEFAULT_WINDOW_SECONDS,
) -> BackfillResult:
    """List ``types`` (default: every type of ``gateway.LISTERS``) and write
    each object into the mirror, resuming an unfinished run (``restart``
    starts a new one). Setting ``stop`` ends each type after its current
    page (its cursor saved: the next call resumes). ``on_page`` is called,
    from the worker threads, after each page is committed.

    A type that fails (Stripe kept refusing) is reported ``failed`` with its
    error; the others go on. Reads go through ``reader`` (one rate limit).

    Raises:
        ValueError: an unknown type or a bad ``concurrency``/``page_size``.
        sqlalchemy.exc.SQLAlchemyError: the database failed.
    """
    chosen = list(types) if types else list(LISTERS)
    for object_type in chosen:
        if object_type not in LISTERS:
            raise ValueError(f"unknown object type {object_type!r}; known: {', '.join(LISTERS)}")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if not 1 <= page_size <= PAGE_SIZE:
        raise ValueError(f"page_size must be between 1 and {PAGE_SIZE}")
    stop = stop or threading.Event()
    started = time.monotonic()
    reads_before, limited_before = reader.reads, reader.rate_limited
    run, resumed = _open_run(engine, chosen, restart=restart)
    log.info(
        "backfill started",
        action="backfill_started",
        run=run,
        resumed=resumed,
        types=chosen,
    )
    result = BackfillResult(run=run, resumed=resumed)
    with ThreadPoolExecutor(
        max_workers=min(concurrency, len(chosen)), thread_name_prefix="stripeline-backfill"
    ) as pool:
        futures = {
            object_type: pool.submit(
                _backfill_type,
                engine,
                reader,
                object_type,
                run=run,
                stop=stop,
                on_page=on_page,
                page_size=page_size,
                coalesce_seconds=coalesce_seconds,
            )
            for object_type in chosen
        }
        try:
            for object_type, future in futures.items():
                result.types[object_type] = future.result()
        except BaseException:
            stop.set()  # Ctrl-C or a database failure: let the other threads end
            raise
    result.reads = reader.reads - reads_before
    result.rate_limited = reader.rate_limited - limited_before
    result.seconds = time.monotonic() - started
    log.info("backfill done", action="backfill_done", **result.to_json())
    return result
