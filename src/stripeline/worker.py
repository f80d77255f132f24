"""The worker: claims due events, applies them to the mirror, runs handlers.

A batch of events that no handler wants (none thin) is picked, applied to the
mirror and marked processed in one transaction, without a lease: the
transaction holds the events until it ends, and a rollback leaves them due.
Any other batch is claimed in a short transaction (the lease). The batch is then
processed in transactions of at most ``max_transaction_seconds`` each; every
event inside runs in its own SAVEPOINT, so a failing handler rolls back only
its own event's writes, and what a handler writes through ``event.session``
commits together with that event's ``processed`` mark. A worker killed at any
point loses nothing: uncommitted events stay ``processing`` until their lease
runs out, then any worker claims them again.

On PostgreSQL, workers on any number of hosts share the queue (``FOR UPDATE
SKIP LOCKED``) and are woken by ``LISTEN stripeline_events``; polling every
``worker_poll_seconds`` is the safety net.

What an event's object does to the mirror is ``mirror.policy``'s call; the
re-fetch queue is read by ``mirror.refetch.process_due``. The worker only
claims, applies, runs handlers and finishes.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import os
import queue
import random
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_for_future
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from stripeline import _json, inbox
from stripeline.app import Handler, ReceivedEvent, Stripeline
from stripeline.core.backoff import exponential
from stripeline.db.engine import connect, handler_transaction, is_postgres, writers_waiting
from stripeline.inbox import NOTIFY_CHANNEL
from stripeline.log import get_logger
from stripeline.mirror import refetch
from stripeline.mirror._store import lock_objects, object_keys, try_lock_objects
from stripeline.mirror.policy import READ_KEY, EventObject, apply_events

log = get_logger("stripeline.worker")

#: Longest a processing transaction runs before it commits. On SQLite it
#: holds the one write lock meanwhile, and webhooks wait behind it (those of
#: another process too): short.
DEFAULT_MAX_TRANSACTION_SECONDS = {"sqlite": 0.02, "postgresql": 0.2}
#: Most events applied to the mirror in one bulk statement.
BULK_SIZE = 500
#: SQLite: the fewest events a claim or a bulk run takes, however slow the
#: last ones were (``Worker._rows_within``).
SQLITE_MIN_RUN = 16
#: SQLite: how long after a writer was last seen waiting for the write lock
#: the worker keeps sizing its transactions by time (``Worker._short``);
#: otherwise it claims whole batches and applies them in full bulk runs (a
#: backlog drains faster with fewer commits when nobody waits).
SQLITE_CONTENDED_SECONDS = 10.0
#: SQLite: what applying a handler-less event in bulk costs (its ``finish``
#: and mirror writes) until it is measured: the first claim's size.
SQLITE_EVENT_SECONDS = 0.0005
#: Times a group that deadlocked is run again before the error counts.
MAX_DEADLOCK_RETRIES = 20
#: PostgreSQL's SQLSTATE for a deadlock (the victim's transaction is aborted).
DEADLOCK_SQLSTATE = "40P01"
#: Seconds the worker waits past the handler timeout before it gives a
#: handler up (on PostgreSQL, ``statement_timeout`` ends a hang in SQL first).
HANDLER_GRACE_SECONDS = 0.5
#: PostgreSQL: seconds a handler runs before the rest of its batch, not yet
#: started, is released to the other workers rather than held behind it.
RELEASE_AFTER_SECONDS = 1.0
#: Seconds between two checks of the dispute deadlines (``flows.disputes``).
DEADLINE_CHECK_SECONDS = 60.0


#: PostgreSQL: the inbox rows of a run, locked in id order (``_take_locks``).
_LOCK_ROWS = "SELECT id FROM stripeline_events WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE"
_TRY_LOCK_ROWS = _LOCK_ROWS + " SKIP LOCKED"


class HandlerTimeout(Exception):
    """An event's handlers ran past ``STRIPELINE_HANDLER_TIMEOUT``: the
    event's attempt failed (retried with backoff, dead at the limit)."""


class _GivenUp(BaseException):
    """A handler still runs past its deadline: its thread is left to finish on
    its own, and the connection of its group is given up (rolled back). Not an
    ``Exception``: nothing on the way to ``run_once`` may touch the connection."""

    def __init__(self, event_id: str, attempt: int, timeout: float):
        super().__init__(event_id)
        self.event_id = event_id
        self.attempt = attempt
        self.timeout = timeout


def _timeout_message(timeout: float) -> str:
    return f"the handlers ran past the handler timeout (STRIPELINE_HANDLER_TIMEOUT={timeout:g} s)"


class _HandlerThread:
    """The thread an event's handlers run in, so that the worker can stop
    waiting for them. A Python thread cannot be killed: one that hangs is
    given up (``abandon``) and finishes in the background, its result unused.
    A daemon thread: a hung handler does not keep the process from exiting."""

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[
            tuple[contextvars.Context, Callable[[], None], Future[None]] | None
        ] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._serve, name="stripeline-handler", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], None]) -> Future[None]:
        future: Future[None] = Future()
        # The event's log fields go along (structlog's context variables).
        self._tasks.put((contextvars.copy_context(), fn, future))
        return future

    def _serve(self) -> None:
        try:
            while (task := self._tasks.get()) is not None:
                context, fn, future = task
                try:
                    context.run(fn)
                except BaseException as exc:  # the worker re-raises it
                    future.set_exception(exc)
                else:
                    future.set_result(None)
        finally:
            if self._loop is not None:
                self._loop.close()

    def run_async(self, awaitable: Awaitable[None], *, deadline: float, timeout: float) -> None:
        """Run an async handler in this thread's loop, cancelled at ``deadline``."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        remaining = max(deadline - time.monotonic(), 0.001)
        task = self._loop.create_task(_awaited(awaitable))
        try:
            self._loop.run_until_complete(asyncio.wait_for(task, remaining))
        except TimeoutError:
            if task.cancelled():  # wait_for cancelled it: the deadline, not the handler
                raise HandlerTimeout(_timeout_message(timeout)) from None
            raise

    def abandon(self) -> None:
        """Leave the thread to finish its handler alone; it ends after it."""
        self._tasks.put(None)

    def close(self) -> None:
        self._tasks.put(None)
        self._thread.join()


async def _awaited(awaitable: Awaitable[None]) -> None:
    await awaitable


def is_deadlock(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it was raised from, is a PostgreSQL deadlock."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        orig = getattr(current, "orig", None)
        for candidate in (current, orig):
            if getattr(candidate, "sqlstate", None) == DEADLOCK_SQLSTATE:
                return True
        current = current.__cause__ or current.__context__
    return False


def _first_line(exc: DBAPIError) -> str:
    """The driver's message of a database error, first line only."""
    orig = exc.orig or exc
    lines = str(orig).strip().splitlines()
    return (lines[0] if lines else type(orig).__name__)[:300]


#: How long ``run`` waits for its LISTEN thread when it stops (the thread
#: checks every second; a connection attempt may take its 3 s timeout).
LISTEN_JOIN_SECONDS = 5.0


def _set_statement_timeout(conn: Connection, value: str) -> None:
    """``SET LOCAL statement_timeout``: until the transaction ends."""
    conn.execute(text("SELECT set_config('statement_timeout', :value, true)"), {"value": value})


def _type_of(claimed: list[inbox.ClaimedEvent], event_id: str) -> str:
    return next((e.type for e in claimed if e.id == event_id), "unknown")


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    """Processes the inbox of ``app``. ``run()`` loops until ``stop()``."""

    def __init__(
        self,
        app: Stripeline,
        *,
        worker_id: str | None = None,
        batch_size: int | None = None,
        lease_seconds: int | None = None,
        poll_seconds: float | None = None,
        max_transaction_seconds: float | None = None,
        handler_timeout: float | None = None,
        listen: bool = True,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = inbox.utcnow,
        deadline_check_seconds: float = DEADLINE_CHECK_SECONDS,
        deadline_now: Callable[[], datetime] | None = None,
    ) -> None:
        """``clock`` (seconds, for leases and transaction lengths) and ``now``
        (the wall clock written to the inbox) are injectable, as in
        ``core.ratelimit.TokenBucket``: tests drive them instead of sleeping.

        ``run()`` checks the dispute deadlines (``Disputes.check_deadlines``)
        when it starts and every ``deadline_check_seconds`` (0: never), with
        ``deadline_now`` as the time (``now`` unless given: a test passes the
        sandbox's clock)."""
        settings = app.settings
        self.app = app
        self.id = worker_id or new_worker_id()
        self.batch_size = batch_size or settings.worker_batch_size
        self.lease_seconds = lease_seconds or settings.lease_seconds
        self.poll_seconds = poll_seconds or settings.worker_poll_seconds
        self.max_transaction_seconds = (
            max_transaction_seconds
            or DEFAULT_MAX_TRANSACTION_SECONDS.get(app.engine.dialect.name, 0.2)
        )
        self.handler_timeout = handler_timeout or settings.handler_timeout
        self._listen = listen and is_postgres(app.engine)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._handler_thread: _HandlerThread | None = None
        #: The batch and the position of its first event not yet started,
        #: while a handler runs; whether that rest was released meanwhile.
        self._unstarted: tuple[list[inbox.ClaimedEvent], int] | None = None
        self._released_from: int | None = None
        self._listener: threading.Thread | None = None
        #: Payloads parsed to find the objects an event touches (PostgreSQL),
        #: and the events of the current group whose handlers started.
        self._bodies: dict[str, Any] = {}
        self._handled: dict[str, bool] = {}
        #: Events claimed so far (each claim counts an attempt).
        self.claimed = 0
        self._ran_in_group: list[inbox.ClaimedEvent] = []
        self._clock = clock
        self._now = now
        #: The reads made for thin events, kept for the coalescing window.
        self._thin_reads: Any = None
        #: SQLite: what a handler-less event costs a transaction, measured
        #: on the bulk runs (``_rows_within``).
        self._sqlite = app.engine.dialect.name == "sqlite"
        self._event_seconds = SQLITE_EVENT_SECONDS
        #: Whether the group in progress applies picked events, not leased
        #: ones (``_claim``), and those it left out (objects held elsewhere).
        self._free = False
        self._left_out: set[str] = set()
        #: SQLite: until when transactions stay short (a writer was seen waiting).
        self._contended_until = float("-inf")
        self.deadline_check_seconds = deadline_check_seconds
        self._deadline_now = deadline_now or now

    # -- control -----------------------------------------------------------

    def wake(self) -> None:
        """Look for work now (the web app calls this after storing an event)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Process events until ``stop()``; database outages are waited out."""
        log.info("worker_started", action="worker_started", worker=self.id)
        if self._listen:
            self._listener = threading.Thread(
                target=self._listen_forever, name="stripeline-listen", daemon=True
            )
            self._listener.start()
        failures = 0
        next_check = self._clock() if self.deadline_check_seconds > 0 else None
        try:
            while not self._stop.is_set():
                try:
                    if next_check is not None and self._clock() >= next_check:
                        self.check_deadlines()
                        next_check = self._clock() + self.deadline_check_seconds
                    done = self.run_once()
                    failures = 0
                except SQLAlchemyError as exc:  # a connection lost mid-transaction included
                    failures += 1
                    delay = exponential(failures, initial=1.0, maximum=30.0)
                    log.warning(
                        "worker_database_error",
                        action="worker_database_error",
                        error=(
                            str(getattr(exc, "orig", None) or exc) or type(exc).__name__
                        ).splitlines()[0][:300],
                        retry_in=delay,
                    )
                    self._stop.wait(delay)
                    continue
                if done == 0:
                    wait = self._idle_wait()
                    if next_check is not None:
                        wait = max(0.01, min(wait, next_check - self._clock()))
                    self._wake.wait(wait)
                    self._wake.clear()
        finally:
            self.close()
            listener, self._listener = self._listener, None
            if listener is not None:
                # It looks at ``_stop`` at least once a second: once ``run``
                # returns, its LISTEN connection is closed too.
                listener.join(LISTEN_JOIN_SECONDS)
            log.info("worker_stopped", action="worker_stopped", worker=self.id)

    def check_deadlines(self) -> int:
        """Fire the dispute deadline alarms now due (once each, whatever the
        number of workers); return how many fired. ``run()`` calls it."""
        from stripeline.flows.disputes import Disputes

        return len(Disputes(self.app, clock=self._deadline_now).check_deadlines())

    def close(self) -> None:
        """Release what the worker holds (the handler thread and its event loop)."""
        if self._handler_thread is not None:
            self._handler_thread.close()
            self._handler_thread = None

    def drain(self, *, timeout: float = 30.0) -> int:
        """Process until nothing is due (tests, one-off runs); return how many."""
        deadline = self._clock() + timeout
        total = 0
        try:
            while self._clock() < deadline:
                done = self.run_once()
                if done == 0:
                    return total
                total += done
        finally:
            self.close()
        raise TimeoutError(f"inbox not drained within {timeout} s")

    def _idle_wait(self) -> float:
        try:
            with connect(self.app.engine, readonly=True) as conn:
                due = inbox.next_due(conn)
                if self.app.fetcher is not None:
                    due_read = refetch.next_due(conn)
                    if due_read is not None and (due is None or due_read < due):
                        due = due_read
        except DBAPIError:
            return self.poll_seconds
        if due is None:
            return self.poll_seconds
        return max(0.01, min(self.poll_seconds, (due - self._now()).total_seconds()))

    # -- one batch ---------------------------------------------------------

    def run_once(self) -> int:
        """Take one batch and process it; return how many events were taken.

        A batch no handler wants is applied in the transaction that picks
        it, without a lease (``_claim``). Any other batch is claimed (leased)
        in a transaction of its own, before any handler runs: every run of
        a handler is a counted attempt even when the batch's transaction
        cannot commit (a full disk, a read-only database), so the dead-letter
        limit holds and ``once()``-guarded effects are not repeated without
        bound. The batch is then processed in groups, one transaction each.
        A group that deadlocks (PostgreSQL) is rolled back and run again
        whole, without counting an attempt; a group whose transaction fails
        otherwise has its events marked failed in a transaction of their own
        (when the database takes one), and the error goes to ``run()``.
        """
        self._released_from = None
        self._bodies = {}
        # Whether each type has handlers, asked once per batch (a handler
        # registered meanwhile counts from the next batch).
        self._handled = {}
        claimed, position = self._claim()
        self.claimed += len(claimed)
        # Thin events' reads count against the lease: a long one renews it below.
        leased_at = self._clock()
        if position == 0:
            claimed = self._hydrate(claimed)
        deadlocks = 0
        while position < self._end(claimed):
            start = position
            try:
                if self._clock() - leased_at > self.lease_seconds / 3:
                    # Slow handlers: keep the rest of the batch ours (in a
                    # transaction of its own: no row lock held meanwhile).
                    with connect(self.app.engine, background=True) as conn:
                        inbox.renew(
                            conn,
                            [e.id for e in claimed[position:]],
                            worker=self.id,
                            lease_seconds=self.lease_seconds,
                            now=self._now(),
                        )
                    leased_at = self._clock()
                with connect(self.app.engine, background=True) as conn:
                    reached = self._process_group(conn, claimed, position)
            except _GivenUp as given_up:
                # Those released while the handler ran are other workers' now.
                end = len(claimed) if self._released_from is None else self._released_from
                self._give_up(given_up, claimed[start:end])
                return len(claimed)
            except DBAPIError as exc:
                if is_deadlock(exc) and deadlocks < MAX_DEADLOCK_RETRIES:
                    deadlocks += 1
                    log.info(
                        "deadlock_retried",
                        action="deadlock_retried",
                        worker=self.id,
                        events=len(claimed) - start,
                        retry=deadlocks,
                    )
                    if self._ran_in_group:
                        self._count_rerun(claimed, exc)
                    self._stop.wait(random.uniform(0.0, 0.02 * deadlocks))  # noqa: S311 (jitter)
                    continue
                self._abandon(claimed[start:], exc)
                raise
            position = reached  # the events past ``_end`` went to other workers
        return len(claimed) + self.refetch_once()

    def _claim(self, *, leased: bool = False) -> tuple[list[inbox.ClaimedEvent], int]:
        """Pick a batch; return it and the position processed up to.

        A batch of events that no handler wants, none thin nor past its last
        attempt, is applied without a lease (unless ``leased``): picked,
        applied to the mirror and marked processed in one transaction
        (``inbox.pick``, ``inbox.finish_picked``), its attempts counted by
        that mark. The transaction that picked the events holds them
        (SQLite: the write lock, from ``BEGIN IMMEDIATE``; PostgreSQL: their
        rows' locks, ``SKIP LOCKED`` for the other workers): nobody else can
        take them meanwhile, and a crash or a rollback leaves them due as they
        were. Each event's row is written once, not claimed then finished.
        What the transaction did not reach (its time ran out, a writer
        waits, an object is locked elsewhere) stays due: the batch returned is
        the part processed. No handler runs in that transaction, so nothing
        outside the database can be repeated when it does not commit; the
        attempts are then counted all the same, and the events marked failed
        (dead at the limit), in a transaction of their own
        (``inbox.abandon_claim``), as a leased batch would be by ``_abandon``.

        Any other batch is leased (``inbox.lease``: the claim), in a
        transaction of its own (position 0), before any handler runs or any
        thin event is read: those take long, may time out, and each run of a
        handler is a counted attempt even when its transaction cannot commit.
        """
        picked: list[inbox.ClaimedEvent] = []
        free = False
        limit = self.batch_size
        try:
            with connect(self.app.engine, background=True) as conn:
                if self._short(conn):
                    # The transaction rewrites each event's row, and may
                    # process them too: no more than one transaction's worth.
                    limit = self._rows_within(self.max_transaction_seconds, limit)
                now = self._now()
                picked = inbox.pick(conn, limit=limit, now=now)
                if not leased and self._claim_free(picked):
                    free = self._free = True
                    self._left_out = set()
                    try:
                        reached = self._process_group(conn, picked, 0)
                    finally:
                        self._free = False
                    if reached > 0:
                        # Those the commit concerns (``_abandon_claim``).
                        picked = [e for e in picked[:reached] if e.id not in self._left_out]
                        return picked, len(picked)
                    # PostgreSQL: the first objects are locked elsewhere;
                    # leased, the batch waits for them holding nothing else.
                    free = False
                claimed = inbox.lease(
                    conn, picked, worker=self.id, lease_seconds=self.lease_seconds, now=now
                )
        except DBAPIError as exc:
            if not free:
                raise
            if is_deadlock(exc):  # rolled back, nothing counted: leased this time
                log.info("deadlock_retried", action="deadlock_retried", worker=self.id)
                return self._claim(leased=True)
            self._abandon_claim(picked, exc)
            raise
        return claimed, 0

    def _short(self, conn: Connection) -> bool:
        """SQLite: whether to size this transaction by time: a writer (the
        webhook writer, of this process or another) waits for the write lock
        now, or did within ``SQLITE_CONTENDED_SECONDS``."""
        if not self._sqlite:
            return False
        now = self._clock()
        if writers_waiting(conn):
            self._contended_until = now + SQLITE_CONTENDED_SECONDS
            return True
        return now < self._contended_until

    def _rows_within(self, seconds: float, most: int) -> int:
        """SQLite: how many handler-less events one transaction processes in
        ``seconds`` at the pace measured so far (``_measured``): at least
        ``SQLITE_MIN_RUN``, at most ``most``.

        The worker's transaction holds SQLite's one write lock, which the
        webhook writer waits for (in another process, the ``stripeline
        worker`` beside ``serve --no-worker``, too): its length, not its
        number of events, is what is bounded; how many events fit depends on
        the machine, the disk and the payloads."""
        if self._event_seconds <= 0:
            return most
        return max(min(SQLITE_MIN_RUN, most), min(most, int(seconds / self._event_seconds)))

    def _measured(self, seconds: float, events: int) -> None:
        """A bulk run of ``events`` took ``seconds``: the pace ``_rows_within``
        sizes the next ones by (a moving average, quick to follow a slower disk)."""
        if self._sqlite and events > 0:
            sample = max(seconds, 0.0) / events
            self._event_seconds = 0.5 * self._event_seconds + 0.5 * sample

    def _claim_free(self, picked: list[inbox.ClaimedEvent]) -> bool:
        """Whether ``picked`` is applied without a lease (``_claim``)."""
        if not picked:
            return False
        from stripeline.sync import thin

        return all(self._bulk_ok(c) and not thin.is_thin(c.payload) for c in picked)

    def _abandon_claim(self, claimed: list[inbox.ClaimedEvent], exc: DBAPIError) -> None:
        """The transaction that picked ``claimed`` and processed it without a
        lease did not commit: count the attempt of each event and mark it
        failed (dead at the limit), in a transaction of its own, unless
        another worker took it meanwhile."""
        settings = self.app.settings
        try:
            with connect(self.app.engine) as conn:
                inbox.abandon_claim(
                    conn,
                    [(e.id, e.attempts) for e in claimed],
                    error="the transaction could not commit: " + _first_line(exc),
                    max_attempts=settings.max_attempts,
                    schedule=settings.retry_schedule,
                    now=self._now(),
                )
        except DBAPIError as again:  # claimed again later: the attempt is counted then
            log.warning(
                "abandon_failed",
                action="abandon_failed",
                worker=self.id,
                events=len(claimed),
                error=_first_line(again),
            )

    def _hydrate(self, claimed: list[inbox.ClaimedEvent]) -> list[inbox.ClaimedEvent]:
        """Thin events of the batch: their object (or full event) read first,
        outside any transaction (``sync.thin``); those whose read failed are
        deferred with backoff and left out."""
        if not claimed:
            return claimed
        from stripeline.sync import thin

        if not any(thin.is_thin(c.payload) for c in claimed):
            return claimed
        if self._thin_reads is None:
            self._thin_reads = thin.ThinReads(self.app.settings.mirror_coalesce_seconds)
        return thin.hydrate(
            self.app.engine,
            self.app.fetcher,
            self.app.settings,
            claimed,
            worker=self.id,
            reads=self._thin_reads,
            now=self._now,
            on_health=self._health_alarm,
        )

    def _health_alarm(self, claimed: inbox.ClaimedEvent, body: dict[str, Any]) -> None:
        """A ``v2.core.health.*`` event: Stripe says its event delivery failed
        (or recovered). The catch-up gap's alarm, once per event whatever the
        retries: an error log line (``action=delivery_health_alarm``), the
        counter ``stripeline_delivery_health_alarms``; the application's
        ``@app.on("v2.core.health.*")`` handlers are its hook, and
        ``stripeline doctor`` lists the newest one."""
        if not self.app.once(f"stripeline:health-alarm:{claimed.id}"):
            return
        self.app.metrics.health_alarms.labels(claimed.type).inc()
        if claimed.type.endswith(".resolved"):
            log.warning(
                "Stripe reports that an event delivery problem is resolved",
                action="delivery_health_resolved",
                event_id=claimed.id,
                event_type=claimed.type,
            )
            return
        log.error(
            "Stripe reports that event delivery failed: run catch-up "
            "(`stripeline sync events`) and `stripeline verify` once it is resolved",
            action="delivery_health_alarm",
            event_id=claimed.id,
            event_type=claimed.type,
        )

    def _give_up(self, given_up: _GivenUp, rest: list[inbox.ClaimedEvent]) -> None:
        """A handler ran past its timeout and its group's transaction was
        rolled back: that event's attempt fails (retried with backoff, dead at
        the limit); every other event of ``rest`` (the rolled-back group's
        and those not started) is released at once, its attempt not counted,
        for any worker to take (NOTIFY wakes them on PostgreSQL)."""
        settings = self.app.settings
        error = f"HandlerTimeout: {_timeout_message(given_up.timeout)}; the worker stopped waiting"
        now = self._now()
        with connect(self.app.engine) as conn:
            # On PostgreSQL this waits for the given-up session's rollback.
            outcome = inbox.mark_failed(
                conn,
                given_up.event_id,
                attempt=given_up.attempt,
                error=error,
                traceback=None,
                max_attempts=settings.max_attempts,
                schedule=settings.retry_schedule,
                now=now,
            )
            inbox.record_attempt(
                conn,
                [
                    {
                        "event_id": given_up.event_id,
                        "number": given_up.attempt,
                        "worker": self.id,
                        "started_at": now - timedelta(seconds=given_up.timeout),
                        "finished_at": now,
                        "outcome": outcome,
                        "error": error,
                        "traceback": None,
                    }
                ],
            )
        self.app.metrics.failures.labels(_type_of(rest, given_up.event_id)).inc()
        log.warning(
            "handler_timed_out",
            action="handler_timed_out",
            event_id=given_up.event_id,
            attempt=given_up.attempt,
            status=outcome,
            timeout=given_up.timeout,
        )
        others = [e.id for e in rest if e.id != given_up.event_id]
        try:
            with connect(self.app.engine) as conn:
                if inbox.release(conn, others, worker=self.id, now=self._now()):
                    inbox.notify_workers(conn)
        except DBAPIError as exc:  # their lease runs out instead
            log.warning("release_failed", action="release_failed", error=_first_line(exc))

    def _count_rerun(self, claimed: list[inbox.ClaimedEvent], exc: DBAPIError) -> None:
        """A deadlock rolled back a group after handlers ran (their SQL, and
        their ``once()`` keys, with it): the group runs again, and those
        handlers with it. Count that run as an attempt of its own (the
        attempt log says ``deadlock``; the next run's ``event.attempt`` is one
        more), so that an outside effect it repeats is never silent."""
        ran = {e.id: e for e in self._ran_in_group}
        self._ran_in_group = []
        error = "rolled back by a deadlock; the handlers run again: " + _first_line(exc)
        now = self._now()
        try:
            with connect(self.app.engine) as conn:
                counted = set(
                    conn.execute(
                        inbox.events.update()
                        .where(
                            inbox.events.c.id.in_(sorted(ran)),
                            inbox.events.c.lease_owner == self.id,
                            inbox.events.c.status == "processing",
                        )
                        .values(attempts=inbox.events.c.attempts + 1)
                        .returning(inbox.events.c.id)
                    ).scalars()
                )
                inbox.record_attempt(
                    conn,
                    [
                        self._attempt_row(ran[event_id], now, 0.0, "deadlock", error)
                        for event_id in sorted(counted)
                    ],
                )
        except DBAPIError as again:  # the run goes uncounted: said in the log
            log.warning("rerun_not_counted", action="rerun_not_counted", error=_first_line(again))
            counted = set()
        for index, event in enumerate(claimed):
            if event.id in counted:
                claimed[index] = dataclasses.replace(event, attempts=event.attempts + 1)
        log.warning(
            "handlers_rerun_after_deadlock",
            action="handlers_rerun_after_deadlock",
            worker=self.id,
            events=len(ran),
            event_ids=sorted(ran)[:20],
        )

    def _abandon(self, rest: list[inbox.ClaimedEvent], exc: DBAPIError) -> None:
        """The transaction of ``rest``'s group could not commit: mark those
        events failed (their attempt was counted at the claim), dead at the
        limit, in a transaction of their own. If the database takes no write
        at all, their lease runs out and they are claimed again, counted."""
        settings = self.app.settings
        error = "the transaction could not commit: " + _first_line(exc)
        try:
            with connect(self.app.engine) as conn:
                inbox.abandon(
                    conn,
                    [(e.id, e.attempts) for e in rest],
                    worker=self.id,
                    error=error,
                    max_attempts=settings.max_attempts,
                    schedule=settings.retry_schedule,
                    now=self._now(),
                )
        except DBAPIError as again:
            log.warning(
                "abandon_failed",
                action="abandon_failed",
                worker=self.id,
                events=len(rest),
                error=_first_line(again),
            )

    def _process_group(
        self, conn: Connection, claimed: list[inbox.ClaimedEvent], position: int
    ) -> int:
        """Process events from ``position`` for at most ``max_transaction_seconds``;
        return the position reached.

        PostgreSQL: before an event (or a bulk run) is processed, the group
        takes the advisory locks of the mirror objects it touches
        (``mirror._store.lock_objects``) and the lock of its inbox row. The
        group's first event waits for them, in ascending order, holding
        nothing else; a later one takes them only if they are free at once,
        else the group ends there (commits) and the event opens the next
        one. A group never waits holding a lock out of that order, so two
        workers (or a worker and the re-fetch loop, or the ingest writer
        counting a duplicate delivery) cannot deadlock on what they share,
        whatever the order of their events.

        Picked events (``_claim``: their inbox rows locked since the pick)
        never wait: a bulk run takes the objects' locks free at once and
        leaves out the events whose objects are held elsewhere (due again
        when this transaction ends).
        """
        started = self._clock()
        attempt_rows: list[dict[str, Any]] = []
        timeout_set = False
        postgres = conn.dialect.name == "postgresql"
        # Nothing taken yet in this transaction (picked events: their rows are).
        fresh = not self._free
        self._ran_in_group = []
        while position < self._end(claimed):
            # Events no handler wants are applied to the mirror in bulk;
            # the others one by one, each in its own SAVEPOINT. SQLite: a
            # bulk run takes what fits in the transaction's time left.
            most = BULK_SIZE
            if self._short(conn):
                left = self.max_transaction_seconds - (self._clock() - started)
                most = self._rows_within(left, BULK_SIZE)
            if self._free:  # every picked event is bulk (``_claim_free``)
                end = min(position + most, self._end(claimed))
            else:
                end = position
                while end < self._end(claimed) and end - position < most:
                    if not self._bulk_ok(claimed[end]):
                        break
                    end += 1
            run = claimed[position:end] or claimed[position : position + 1]
            if postgres and self._free:
                # Picked events whose objects another transaction holds are
                # left out, due again once this transaction ends.
                run = self._take_free(conn, run)
                if not run and position == 0:
                    break  # nothing free at once: ``_claim`` leases the batch
            elif postgres and not self._take_locks(conn, run, wait=fresh):
                break  # held elsewhere: commit first, then wait for them
            fresh = False
            if not run:
                position = end
            elif end > position:
                attempt_rows.extend(self._process_bulk(conn, run))
                position = end
            else:
                if not timeout_set and postgres:
                    # Handlers' SQL (and the rest of this transaction's) runs
                    # under the handler timeout. Set outside the event's
                    # SAVEPOINT, so that rolling one back keeps it.
                    _set_statement_timeout(conn, f"{max(1, int(self.handler_timeout * 1000))}ms")
                    timeout_set = True
                self._unstarted = (claimed, position + 1)
                try:
                    row = self._process(conn, claimed[position])
                finally:
                    self._unstarted = None
                if row is not None:
                    attempt_rows.append(row)
                position += 1
            if self._clock() - started > self.max_transaction_seconds:
                break
            if self._sqlite and writers_waiting(conn):
                # A webhook (or any writer) waits for SQLite's write lock:
                # commit now; the next group lets it go first (and the next
                # transactions are sized by time: ``_short``).
                self._contended_until = self._clock() + SQLITE_CONTENDED_SECONDS
                break
        inbox.record_attempt(conn, attempt_rows)
        return position

    def _take_locks(self, conn: Connection, run: list[inbox.ClaimedEvent], *, wait: bool) -> bool:
        """PostgreSQL: lock what ``run``'s events touch in the mirror, then
        their inbox rows (in id order, as the ingest writer does); with
        ``wait=False`` only if all is free at once (see ``_process_group``)."""
        keys: set[int] = set()
        for claimed in run:
            keys |= self._object_keys(claimed)
        if not lock_objects(conn, keys, wait=wait):
            return False
        if wait and len(run) == 1:
            return True  # ``finish`` locks its one row
        ids = sorted(e.id for e in run)
        rows = conn.exec_driver_sql(_LOCK_ROWS if wait else _TRY_LOCK_ROWS, (ids,)).all()
        return len(rows) == len(ids) or wait

    def _take_free(
        self, conn: Connection, run: list[inbox.ClaimedEvent]
    ) -> list[inbox.ClaimedEvent]:
        """PostgreSQL, picked events (``_claim``): lock what ``run``'s events
        touch in the mirror where it is free at once (their inbox rows are
        locked since ``inbox.pick``); return the events all of whose objects
        are now this transaction's. The transaction never waits for a lock:
        it holds the picked rows, which another's may be waiting for."""
        wanted = [self._object_keys(claimed) for claimed in run]
        refused = try_lock_objects(conn, set[int]().union(*wanted))
        if not refused:
            return run
        taken = []
        for claimed, keys in zip(run, wanted, strict=True):
            if keys & refused:
                self._left_out.add(claimed.id)
            else:
                taken.append(claimed)
        return taken

    def _object_keys(self, claimed: inbox.ClaimedEvent) -> set[int]:
        """The advisory lock keys of the mirror objects ``claimed`` touches."""
        body = self._bodies.get(claimed.id)
        if body is None:
            body = self._bodies[claimed.id] = _json.loads(claimed.payload)
        data = body.get("data") if isinstance(body, dict) else None
        return object_keys(claimed.account, data.get("object") if isinstance(data, dict) else None)

    def _body(self, claimed: inbox.ClaimedEvent) -> Any:
        """The event's parsed payload (parsed once when its locks were taken;
        handed over, so that a group run again parses afresh)."""
        body = self._bodies.pop(claimed.id, None)
        return _json.loads(claimed.payload) if body is None else body

    def _bulk_ok(self, claimed: inbox.ClaimedEvent) -> bool:
        if claimed.attempts > self.app.settings.max_attempts:
            return False
        handled = self._handled.get(claimed.type)
        if handled is None:
            handled = self._handled[claimed.type] = bool(self.app.handlers_for(claimed.type))
        return not handled

    def _process_bulk(
        self, conn: Connection, run: list[inbox.ClaimedEvent]
    ) -> list[dict[str, Any]]:
        """Apply handler-less events to the mirror with a few statements.

        If anything fails, the bulk SAVEPOINT rolls back and each event is
        processed alone, so a bad one fails alone.
        """
        started_at = self._now()
        t0 = time.perf_counter()
        began = self._clock()
        try:
            with conn.begin_nested():
                ids = [e.id for e in run]
                owned = (
                    inbox.finish_picked(conn, ids, now=started_at)
                    if self._free
                    else inbox.finish_many(conn, ids, worker=self.id, now=started_at)
                )
                done = [claimed for claimed in run if claimed.id in owned]
                events = [
                    EventObject(
                        claimed.id,
                        claimed.type,
                        claimed.created,
                        claimed.account,
                        self._body(claimed),
                    )
                    for claimed in done
                ]
                self._mirror(conn, events, now=started_at)
        except Exception as exc:
            if is_deadlock(exc):
                raise  # the whole group runs again (run_once)
            log.warning(
                "bulk_apply_failed",
                action="bulk_apply_failed",
                events=len(run),
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
            if self._free:
                # Each event alone needs its lease: ``_process`` marks a
                # failure on the event's row (taken in this transaction,
                # which still holds the events).
                run = inbox.lease(
                    conn, run, worker=self.id, lease_seconds=self.lease_seconds, now=started_at
                )
            results = [self._process(conn, claimed) for claimed in run]
            return [row for row in results if row is not None]
        elapsed = time.perf_counter() - t0
        self._measured(self._clock() - began, len(run))
        metrics = self.app.metrics
        by_type: dict[str, int] = {}
        logged: list[dict[str, Any]] = []
        for claimed, event in zip(done, events, strict=True):
            metrics.processing_seconds.observe(elapsed / len(run))
            by_type[claimed.type] = by_type.get(claimed.type, 0) + 1
            # A first attempt that succeeds in bulk writes no attempt row: it
            # is on the event row (``attempts`` 1, ``processed_at``). One that
            # ends a story the log tells (earlier attempts, a thin event's
            # reads) is logged, as failures and handler runs are.
            if claimed.attempts > 1 or READ_KEY in event.body:
                logged.append(self._attempt_row(claimed, started_at, elapsed, "processed"))
        for event_type, count in by_type.items():
            metrics.processed.labels(event_type).inc(count)
        return logged

    def _attempt_row(
        self,
        claimed: inbox.ClaimedEvent,
        started_at: datetime,
        elapsed: float,
        outcome: str,
        error: str | None = None,
        tb: str | None = None,
    ) -> dict[str, Any]:
        """A row of the attempt log (``inbox.record_attempt``)."""
        return {
            "event_id": claimed.id,
            "number": claimed.attempts,
            "worker": self.id,
            "started_at": started_at,
            "finished_at": started_at + timedelta(seconds=elapsed),
            "outcome": outcome,
            "error": error[:4000] if error else None,
            "traceback": tb[-20000:] if tb else None,
        }

    def _process(self, conn: Connection, claimed: inbox.ClaimedEvent) -> dict[str, Any] | None:
        settings = self.app.settings
        started_at = self._now()
        t0 = time.perf_counter()
        outcome = "processed"
        error: str | None = None
        tb: str | None = None
        if claimed.attempts > settings.max_attempts:
            # Claimed again after a lease ran out on its last allowed attempt:
            # the worker died while processing it, again and again.
            outcome = inbox.mark_failed(
                conn,
                claimed.id,
                attempt=claimed.attempts,
                error="the lease ran out on the last allowed attempt (worker killed or stuck?)",
                traceback=None,
                max_attempts=settings.max_attempts,
                schedule=settings.retry_schedule,
                now=started_at,
            )
            error = "lease expired"
        else:
            try:
                # Whatever a handler logs carries the event it is handling.
                with (
                    structlog.contextvars.bound_contextvars(
                        event_id=claimed.id, event_type=claimed.type
                    ),
                    conn.begin_nested(),
                ):
                    # Marked processed first (and locked): the SAVEPOINT's
                    # rollback undoes it if anything below fails.
                    if not inbox.finish(conn, claimed.id, worker=self.id, now=started_at):
                        log.warning(
                            "lease_lost", action="lease_lost", event_id=claimed.id, worker=self.id
                        )
                        return None
                    body = self._body(claimed)
                    event = ReceivedEvent(
                        id=claimed.id,
                        type=claimed.type,
                        created=claimed.created,
                        livemode=bool(body.get("livemode")),
                        account=claimed.account,
                        api_version=body.get("api_version"),
                        data=body,
                        attempt=claimed.attempts,
                        _connection=conn,
                    )
                    try:
                        self._apply(conn, event, now=started_at)
                        event._finish()
                    except _GivenUp:
                        raise  # the handler's thread may still use its session
                    except BaseException:
                        # Close the handler's session before its SAVEPOINT goes.
                        event._discard()
                        raise
            except Exception as exc:
                if is_deadlock(exc):
                    raise  # not the event's fault: the whole group runs again (run_once)
                error = f"{type(exc).__name__}: {exc}"
                tb = traceback.format_exc()
                outcome = inbox.mark_failed(
                    conn,
                    claimed.id,
                    attempt=claimed.attempts,
                    error=error,
                    traceback=tb,
                    max_attempts=settings.max_attempts,
                    schedule=settings.retry_schedule,
                    now=self._now(),
                )
                self.app.metrics.failures.labels(claimed.type).inc()
                log.warning(
                    "event_failed",
                    action="event_failed",
                    event_id=claimed.id,
                    event_type=claimed.type,
                    attempt=claimed.attempts,
                    status=outcome,
                    error=error[:500],
                )
        elapsed = time.perf_counter() - t0
        self.app.metrics.processing_seconds.observe(elapsed)
        if outcome == "processed":
            self.app.metrics.processed.labels(claimed.type).inc()
        return self._attempt_row(claimed, started_at, elapsed, outcome, error, tb)

    def _apply(self, conn: Connection, event: ReceivedEvent, *, now: datetime) -> None:
        self._mirror(
            conn,
            [EventObject(event.id, event.type, event.created, event.account, event.data)],
            now=now,
        )
        handlers = self.app.handlers_for(event.type)
        if handlers:
            self._ran_in_group.append(
                inbox.ClaimedEvent(
                    event.id, event.type, b"", event.attempt, event.created, event.account
                )
            )
            self._run_handlers(conn, event, handlers)

    def _run_handlers(
        self, conn: Connection, event: ReceivedEvent, handlers: list[Handler]
    ) -> None:
        """Run ``handlers`` in the handler thread, for at most ``handler_timeout``.

        On PostgreSQL their SQL runs under ``statement_timeout``: a statement
        that hangs is cancelled, the handler fails, and only its SAVEPOINT is
        rolled back. A handler that hangs in Python cannot be stopped: past the
        deadline the worker interrupts the connection's statement, gives the
        connection (and so the group's transaction) up and raises ``_GivenUp``;
        the thread finishes in the background and what it does is discarded.
        """
        timeout = self.handler_timeout
        deadline = time.monotonic() + timeout
        postgres = conn.dialect.name == "postgresql"
        thread = self._handler_thread
        if thread is None:
            thread = self._handler_thread = _HandlerThread()

        scope = self.app.handler_scope

        def call() -> None:
            try:
                with scope(event) if scope is not None else nullcontext():
                    for handler in handlers:
                        result = handler(event)
                        if result is not None and asyncio.iscoroutine(result):
                            thread.run_async(
                                cast(Awaitable[None], result), deadline=deadline, timeout=timeout
                            )
            except HandlerTimeout:
                raise
            except Exception as exc:
                if time.monotonic() >= deadline:  # statement_timeout, most likely
                    raise HandlerTimeout(f"{_timeout_message(timeout)}: {exc}") from exc
                raise

        # The handlers run in a copy of this context, marked: on SQLite a write
        # on another connection fails at once (the event's connection has the lock).
        with handler_transaction(conn):
            future = thread.submit(call)
        wait = timeout + HANDLER_GRACE_SECONDS
        done: Any = ()
        if postgres and self._unstarted is not None and wait > RELEASE_AFTER_SECONDS:
            done, _ = wait_for_future([future], timeout=RELEASE_AFTER_SECONDS)
            if not done:
                self._release_unstarted()
                wait -= RELEASE_AFTER_SECONDS
        if not done:
            done, _ = wait_for_future([future], timeout=wait)
        if not done:
            self._handler_thread = None
            thread.abandon()
            self._give_up_connection(conn)
            raise _GivenUp(event.id, event.attempt, timeout)
        future.result()  # the handler's own exception, if any

    def _end(self, claimed: list[inbox.ClaimedEvent]) -> int:
        """Where the batch's events still this worker's end: at those not yet
        started that a slow handler released (``_process_group`` changes it
        under ``run_once``; a group a deadlock rolled back after the release
        still runs again up to there)."""
        return len(claimed) if self._released_from is None else self._released_from

    def _release_unstarted(self) -> None:
        """A handler is slow (PostgreSQL): give the events of the batch not yet
        started back to the queue, in a transaction of its own, so that other
        workers take them now; this worker stops after the slow event."""
        if self._unstarted is None:  # pragma: no cover - only called with one
            return
        claimed, start = self._unstarted
        rest = [e.id for e in claimed[start:]]
        if not rest:
            return
        self._released_from = start
        try:
            with connect(self.app.engine) as conn:
                released = inbox.release(conn, rest, worker=self.id, now=self._now())
                if released:
                    inbox.notify_workers(conn)
        except DBAPIError as exc:  # their lease runs out instead
            log.warning("release_failed", action="release_failed", error=_first_line(exc))
            return
        log.info("batch_released", action="batch_released", worker=self.id, released=released)

    def _give_up_connection(self, conn: Connection) -> None:
        """Interrupt the connection's statement and invalidate it: the group's
        transaction is rolled back (PostgreSQL ends the session of a closed
        connection, releasing its row locks: ``_give_up``'s updates wait for
        that), and the given-up handler's further use of it fails."""
        dbapi = conn.connection.dbapi_connection
        try:
            if conn.dialect.name == "postgresql":
                dbapi.cancel()  # type: ignore[union-attr]
            else:
                dbapi.interrupt()  # type: ignore[union-attr]
        except Exception as exc:  # the connection may be gone already
            log.info("interrupt_failed", action="interrupt_failed", error=str(exc)[:300])
        conn.invalidate()

    def _mirror(self, conn: Connection, events: list[EventObject], *, now: datetime) -> None:
        settings = self.app.settings
        apply_events(
            conn,
            events,
            policy_for=settings.policy_for,
            now=now,
            window=settings.mirror_coalesce_seconds,
        )

    # -- re-fetches --------------------------------------------------------

    def refetch_once(self, limit: int = 20) -> int:
        """Read due objects from the API and apply them; return how many."""
        fetcher = self.app.fetcher
        if fetcher is None:
            return 0
        settings = self.app.settings
        return refetch.process_due(
            self.app.engine,
            fetcher,
            worker=self.id,
            lease_seconds=self.lease_seconds,
            schedule=settings.retry_schedule,
            max_attempts=settings.max_attempts,
            window=settings.mirror_coalesce_seconds,
            limit=limit,
            now=self._now,
        )

    # -- PostgreSQL LISTEN -------------------------------------------------

    def _listen_forever(self) -> None:
        import psycopg

        url = self.app.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        failures = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=3) as pg:
                    pg.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    failures = 0
                    while not self._stop.is_set():
                        for _ in pg.notifies(timeout=1.0, stop_after=1):
                            self._wake.set()
            except psycopg.Error:
                failures += 1
                self._stop.wait(exponential(failures, initial=1.0, maximum=30.0))
