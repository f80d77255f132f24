"""The tables. Migrations under ``migrations/`` must match these exactly
(``alembic check`` runs in the test suite)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Event(Base):
    """The inbox: every verified event, whole, with its processing state."""

    __tablename__ = "stripeline_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(255))
    account: Mapped[str | None] = mapped_column(String(255))
    livemode: Mapped[bool] = mapped_column(Boolean)
    api_version: Mapped[str | None] = mapped_column(String(64))
    created: Mapped[int] = mapped_column(BigInteger)
    object_id: Mapped[str | None] = mapped_column(String(255))
    object_type: Mapped[str | None] = mapped_column(String(64))
    #: The raw body exactly as received (or as fetched, for catch-up).
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    #: webhook | connect | catch-up | replay
    source: Mapped[str] = mapped_column(String(16))
    #: pending | processing | processed | failed | dead | ignored
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    deliveries: Mapped[int] = mapped_column(Integer, default=1)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: When the event is next due: for pending/failed rows the next attempt,
    #: for processing rows the end of the worker's lease (after which any
    #: worker may claim it again). None once processed, dead or ignored.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_traceback: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_stripeline_events_due", "status", "next_attempt_at"),
        Index("ix_stripeline_events_type", "type"),
        Index("ix_stripeline_events_object", "object_id"),
        Index("ix_stripeline_events_created", "created"),
    )


class Delivery(Base):
    """One row per time an event reached us (Stripe retries, resends, catch-up)."""

    __tablename__ = "stripeline_deliveries"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(16))
    #: The t= of the Stripe-Signature header (None for catch-up and replay).
    signed_at: Mapped[int | None] = mapped_column(BigInteger)


class Attempt(Base):
    """One row per processing attempt, with its outcome and error."""

    __tablename__ = "stripeline_attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), index=True)
    number: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: processed | failed | dead
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)


class MirrorColumns:
    """The columns every mirror table has (the generic one and the typed ones).

    Typed tables add the columns applications filter on; see
    ``stripeline.mirror.tables``.
    """

    #: "" for the platform account, else the connected account id.
    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    livemode: Mapped[bool] = mapped_column(Boolean)
    #: The object exactly as Stripe last described it.
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    #: Ordering marker: the second the state describes (``core.ordering``) …
    marker: Mapped[int] = mapped_column(BigInteger)
    #: … and its rank inside that second.
    marker_rank: Mapped[int] = mapped_column(Integer)
    #: The event the state came from; None when it was fetched from the API.
    event_id: Mapped[str | None] = mapped_column(String(255))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StripeObject(MirrorColumns, Base):
    """The mirror of every object type without a typed table of its own."""

    __tablename__ = "stripeline_objects"

    object: Mapped[str] = mapped_column(String(64), index=True)


class Cursor(Base):
    """Saved positions of the sync jobs (catch-up's last event, …)."""

    __tablename__ = "stripeline_cursors"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))
    #: When the position refers to a point in time (an event's created), that time.
    position_time: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OnceKey(Base):
    """Keys taken by ``once(key)``: a side effect guarded by one is done once."""

    __tablename__ = "stripeline_once"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    event_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Refetch(Base):
    """Objects to read again from the API, coalesced: one row per object.

    A request that finds the row already there only counts itself and moves
    ``last_requested_at``: many events about one object within the window
    cost one API read.
    """

    __tablename__ = "stripeline_refetches"

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    object_type: Mapped[str] = mapped_column(String(64))
    livemode: Mapped[bool] = mapped_column(Boolean)
    requests: Mapped[int] = mapped_column(Integer, default=1)
    first_requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: When the read is due (or, while ``lease_owner`` is set, when the lease ends).
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
