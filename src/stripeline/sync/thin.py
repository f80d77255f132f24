"""Thin events: what the worker fetches before it processes one.

A thin event (``object: v2.core.event``, from an Event Destination) names
what changed without carrying it. It is verified and stored like any event
(``core.envelope.parse_thin``: a v1 thin event is stored under the id of the
snapshot event it stands for, and its snapshot name, so the two deliveries of
one change are one inbox row). It is due only once the coalescing window
(``STRIPELINE_MIRROR_COALESCE_SECONDS``) has passed, so that a burst of
changes to one object arrives before its read.

When a worker claims thin events, ``hydrate`` reads, outside any
transaction and through the app's rate-limited ``Fetcher``:

- for a v1 thin event whose notification did not name its snapshot event
  (``snapshot_event`` is optional in Stripe's API; the event was stored under
  its own id): the full event (``/v2/core/events/{id}``). When it names the
  snapshot event, the thin event is stored again under that id, as the
  webhook route would have stored it (``_merge``: a new row, or one more
  delivery of the snapshot delivery's row), and processed from there; when
  it does not, the thin event is processed under its own id (logged
  ``thin_event_without_snapshot_event``: a snapshot delivery of the same
  change is then a change of its own);

- for an event with a ``related_object``: the object as it is now, with the
  ``Stripe-Account`` of the event's ``context``; one read per object for
  every thin event received before that read started (the worker keeps each
  newest read of each object), so a burst costs one read;
- for any other (``v2.core.health.*``, an object the mirror does not read
  such as a ``v2.core.account``, …): the full event
  (``/v2/core/events/{id}``, with its ``Stripe-Context``) when the fetcher
  can make that read, else the notification as it came.

The event is then processed as a snapshot event whose ``data.object`` is
the object read: the mirror applies it as a read (``mirror.policy``, under
``READ_KEY``), and the handlers run with it. A read that fails is retried
with the inbox's backoff and never dead-lettered when Stripe says it can be
retried (429, 5xx, network); an object that no longer exists is applied as
deleted, logged and recorded in the attempt log (``object_gone``).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, select, update

from stripeline import inbox
from stripeline.core.backoff import scheduled
from stripeline.core.envelope import ID_LENGTH, THIN_OBJECT, Envelope, parse_thin
from stripeline.db.engine import connect
from stripeline.errors import StripeAPIError
from stripeline.log import get_logger
from stripeline.mirror._store import held_marker
from stripeline.mirror.policy import READ_KEY

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from stripeline.mirror.fetch import Fetcher
    from stripeline.settings import Settings

__all__ = ["READ_KEY", "THIN_KEY", "ThinReads", "hydrate", "is_thin", "thin_due_at"]

log = get_logger("stripeline.thin")

#: Where a hydrated body keeps the thin notification as it came.
THIN_KEY = "thin_event"


def thin_due_at(settings: Settings, envelope: Envelope, received_at: datetime) -> datetime | None:
    """When a worker may first take a thin event about an object: past the
    coalescing window. None for the others (at once)."""
    if not envelope.thin or envelope.object_id is None:
        return None
    return received_at + timedelta(seconds=settings.mirror_coalesce_seconds)


def is_thin(payload: bytes) -> bool:
    """Whether a stored payload is a thin event (not yet hydrated)."""
    if b"v2.core.event" not in payload:
        return False
    try:
        body = json.loads(payload)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("object") == THIN_OBJECT


#: Objects whose newest read a worker keeps for thin events.
MAX_KEPT = 10_000


@dataclasses.dataclass(frozen=True, slots=True)
class _Read:
    started: datetime
    fetched_at: int
    data: dict[str, Any] | None
    over: tuple[int, int] | None


class ThinReads:
    """The reads a worker made for thin events: a thin event received before
    a read of its object started is served by that read (the newest read of
    each object is kept, at most ``MAX_KEPT`` objects)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._reads: dict[tuple[str, str], _Read] = {}
        self._lock = threading.Lock()
        #: API reads made for thin events (objects and full events).
        self.count = 0

    def get(self, key: tuple[str, str], received: datetime, now: datetime) -> _Read | None:
        with self._lock:
            read = self._reads.get(key)
            # A read started after the event was received shows its change,
            # however long ago it was made (a newer change has its own event).
            if read is None or read.started < received:
                return None
            return read

    def put(self, key: tuple[str, str], read: _Read) -> None:
        with self._lock:
            self._reads[key] = read
            if len(self._reads) > MAX_KEPT:  # keep it bounded: drop the oldest
                oldest = min(self._reads, key=lambda k: self._reads[k].started)
                del self._reads[oldest]


def _received(engine: Engine, ids: Sequence[str]) -> dict[str, datetime]:
    events = inbox.events
    with connect(engine, readonly=True) as conn:
        rows = conn.execute(select(events.c.id, events.c.received_at).where(events.c.id.in_(ids)))
        return {row[0]: row[1] for row in rows}


def _full_event(fetcher: Fetcher, note: dict[str, Any]) -> dict[str, Any] | None:
    """``/v2/core/events/{id}`` through the fetcher's reader (rate limited),
    or None when the fetcher cannot make that read.

    Raises:
        StripeAPIError: the read failed.
    """
    reader = getattr(fetcher, "reader", None)
    if reader is None:
        return None
    from stripeline.gateway.client import stripe_errors

    reader.limiter.acquire()
    with reader._lock:
        reader.reads += 1
    options: dict[str, Any] = {}
    if note.get("context"):
        options["stripe_context"] = note["context"]
    with stripe_errors():
        result = reader.client.v2.core.events.retrieve(note["id"], options=options)
    response = result.last_response
    if response is not None and isinstance(response.data, dict):
        return dict(response.data)
    return dict(result.to_dict())  # pragma: no cover - the SDK keeps what it parsed


def _snapshot_body(
    claimed: inbox.ClaimedEvent, note: dict[str, Any], read: _Read, object_type: str, object_id: str
) -> dict[str, Any]:
    gone = read.data is None
    obj = (
        read.data
        if read.data is not None
        else {"id": object_id, "object": object_type, "deleted": True}
    )
    reason = note.get("reason") or {}
    return {
        "id": claimed.id,
        "object": "event",
        "type": claimed.type,
        "created": claimed.created,
        "livemode": bool(note.get("livemode")),
        "account": claimed.account,
        "api_version": None,
        "data": {"object": obj},
        "request": reason.get("request") if isinstance(reason, dict) else None,
        THIN_KEY: note,
        READ_KEY: {"fetched_at": read.fetched_at, "over": read.over, "gone": gone},
    }


def _defer(
    engine: Engine,
    claimed: inbox.ClaimedEvent,
    exc: StripeAPIError,
    *,
    worker: str,
    settings: Settings,
    now: datetime,
) -> str:
    """A read failed: the event is tried again with the inbox's backoff. When
    Stripe says the read can be retried, the event is never dead-lettered
    (its attempt count stops below the limit)."""
    error = f"fetch failed: {type(exc).__name__}: {exc.message}"[:4000]
    max_attempts = settings.max_attempts
    with connect(engine) as conn:
        if exc.retryable:
            attempts = min(claimed.attempts, max(max_attempts - 1, 0))
            delay = scheduled(max(claimed.attempts, 1), settings.retry_schedule)
            events = inbox.events
            conn.execute(
                update(events)
                .where(
                    and_(
                        events.c.id == claimed.id,
                        events.c.lease_owner == worker,
                        events.c.status == "processing",
                    )
                )
                .values(
                    status="failed",
                    attempts=attempts,
                    next_attempt_at=now + timedelta(seconds=delay),
                    lease_owner=None,
                    last_error=error,
                    last_traceback=None,
                )
            )
            outcome = "fetch_failed"
        else:
            outcome = inbox.mark_failed(
                conn,
                claimed.id,
                attempt=claimed.attempts,
                error=error,
                traceback=None,
                max_attempts=max_attempts,
                schedule=settings.retry_schedule,
                now=now,
            )
        inbox.record_attempt(
            conn,
            [
                {
                    "event_id": claimed.id,
                    "number": claimed.attempts,
                    "worker": worker,
                    "started_at": now,
                    "finished_at": now,
                    "outcome": outcome,
                    "error": error,
                    "traceback": None,
                }
            ],
        )
    log.warning(
        "thin_fetch_failed",
        action="thin_fetch_failed",
        event_id=claimed.id,
        event_type=claimed.type,
        attempt=claimed.attempts,
        status=outcome,
        error=error[:300],
    )
    return outcome


def _record_gone(
    engine: Engine,
    claimed: inbox.ClaimedEvent,
    object_type: str,
    object_id: str,
    *,
    worker: str,
    now: datetime,
) -> None:
    error = f"the related {object_type} {object_id} no longer exists: applied as deleted"
    with connect(engine) as conn:
        inbox.record_attempt(
            conn,
            [
                {
                    "event_id": claimed.id,
                    "number": claimed.attempts,
                    "worker": worker,
                    "started_at": now,
                    "finished_at": now,
                    "outcome": "object_gone",
                    "error": error,
                    "traceback": None,
                }
            ],
        )
    log.info(
        "thin_object_gone",
        action="thin_object_gone",
        event_id=claimed.id,
        object_type=object_type,
        object_id=object_id,
    )


def _wants_snapshot_id(item: inbox.ClaimedEvent, note: dict[str, Any]) -> bool:
    """A v1 thin event stored under its own id: its notification did not name
    its snapshot event (``snapshot_event`` is optional in Stripe's API)."""
    return (
        str(note.get("type") or "").startswith("v1.")
        and not note.get("snapshot_event")
        and item.id == note.get("id")
    )


def _merge(
    engine: Engine,
    settings: Settings,
    item: inbox.ClaimedEvent,
    note: dict[str, Any],
    snapshot: str,
    *,
    worker: str,
) -> bool:
    """Store a v1 thin event held under its own id under its snapshot event's
    id instead, in one transaction: a new inbox row (the notification, now
    naming ``snapshot``, due as the first was), or one more delivery of the
    row that id already has (the snapshot delivery came first); the row under
    the thin id and its attempts are deleted. False when ``worker`` no longer
    holds the event (another worker took it after its lease ran out)."""
    events = inbox.events
    body = dict(note, snapshot_event=snapshot)
    envelope = parse_thin(body)
    with connect(engine) as conn:
        row = conn.execute(
            select(events.c.received_at, events.c.source, events.c.signed_at).where(
                and_(
                    events.c.id == item.id,
                    events.c.lease_owner == worker,
                    events.c.status == "processing",
                )
            )
        ).first()
        if row is None:
            return False
        received_at = row.received_at
        (new,) = inbox.store(
            conn,
            [
                inbox.IncomingEvent(
                    envelope=envelope,
                    payload=json.dumps(body).encode(),
                    source=row.source,
                    received_at=received_at,
                    signed_at=row.signed_at,
                    due_at=thin_due_at(settings, envelope, received_at),
                )
            ],
        )
        conn.execute(delete(events).where(events.c.id == item.id))
        conn.execute(delete(inbox.attempts).where(inbox.attempts.c.event_id == item.id))
    log.info(
        "thin_event_merged",
        action="thin_event_merged",
        thin_event_id=item.id,
        event_id=snapshot,
        first_delivery=new,
    )
    return True


def hydrate(
    engine: Engine,
    fetcher: Fetcher | None,
    settings: Settings,
    claimed: list[inbox.ClaimedEvent],
    *,
    worker: str,
    reads: ThinReads,
    now: Callable[[], datetime] = inbox.utcnow,
    on_health: Callable[[inbox.ClaimedEvent, dict[str, Any]], None] | None = None,
) -> list[inbox.ClaimedEvent]:
    """Turn the thin events of a claimed batch into snapshot-shaped ones
    (their payload replaced in memory; the inbox keeps what came). Returns
    the batch without the events whose read failed (deferred with backoff).
    ``on_health`` is called with each ``v2.core.health.*`` event hydrated."""
    thin = [c for c in claimed if is_thin(c.payload)]
    if not thin:
        return claimed
    received = _received(engine, [c.id for c in thin])
    replaced: dict[str, inbox.ClaimedEvent] = {}
    deferred: set[str] = set()
    for item in thin:
        note = json.loads(item.payload)
        related = note.get("related_object")
        try:
            if fetcher is not None and _wants_snapshot_id(item, note):
                # Which change is it? The full event names its snapshot event
                # (kept 30 days by Stripe: past that, the change stays its own).
                try:
                    full = _full_event(fetcher, note)
                except StripeAPIError as exc:
                    if exc.http_status != 404:
                        raise
                    full = None
                if full is not None:
                    reads.count += 1
                snapshot = (full or {}).get("snapshot_event")
                if isinstance(snapshot, str) and snapshot and len(snapshot) <= ID_LENGTH:
                    _merge(engine, settings, item, note, snapshot, worker=worker)
                    deferred.add(item.id)  # stored again under its snapshot id
                    continue
                log.warning(
                    "thin_event_without_snapshot_event",
                    action="thin_event_without_snapshot_event",
                    event_id=item.id,
                    event_type=note.get("type"),
                )
            if (
                isinstance(related, dict)
                and related.get("id")
                and related.get("type")
                and fetcher is not None
                and fetcher.can_fetch(str(related["type"]))
            ):
                object_type, object_id = str(related["type"]), str(related["id"])
                key = (item.account or "", object_id)
                read = reads.get(key, received.get(item.id, now()), now())
                if read is None:
                    with connect(engine, readonly=True) as conn:
                        over = held_marker(conn, object_type, item.account or "", object_id)
                    started = now()
                    fetched = fetcher.fetch(object_type, object_id, item.account)
                    reads.count += 1
                    read = _Read(started, fetched.fetched_at, fetched.data, over)
                    reads.put(key, read)
                body = _snapshot_body(item, note, read, object_type, object_id)
                if read.data is None:
                    _record_gone(engine, item, object_type, object_id, worker=worker, now=now())
            else:
                full = _full_event(fetcher, note) if fetcher is not None else None
                if full is not None:
                    reads.count += 1
                body = dict(full or note)
                if not isinstance(body.get("data"), dict):
                    body["data"] = {}
                body[THIN_KEY] = note
                if on_health is not None and str(item.type).startswith("v2.core.health."):
                    on_health(item, body)
        except StripeAPIError as exc:
            _defer(engine, item, exc, worker=worker, settings=settings, now=now())
            deferred.add(item.id)
            continue
        replaced[item.id] = dataclasses.replace(item, payload=json.dumps(body).encode())
    return [replaced.get(c.id, c) for c in claimed if c.id not in deferred]
