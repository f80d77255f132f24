"""inbox: storing an event writes fewer indexes (type and object leave pending events out)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 07:00:00.000000

Every event stored by the webhook wrote six secondary indexes of
``stripeline_events``; three of them were most of the writer's CPU beyond a
bare insert (SQLite, 3 KB events in groups of 8: 54-57 µs per event with
them all, 21.5 µs with none). ``ix_stripeline_events_due`` (``status,
next_attempt_at``) goes: no query reads it since 0009 (the claim and
``inbox.next_due`` read the partial claim index). The indexes by type
(``type, received_at, id``) and by object (``object_id``) leave out the
pending events (``WHERE status <> 'pending'``): an event enters them when the
worker claims or finishes it, in its own large transactions, off the
webhook's path. The readers that filter by type or object (the console's
event list, ``stripeline events list``, the erasure's export) read the
pending events apart, through ``ix_stripeline_events_status_received``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOT_PENDING = sa.text("status <> 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("stripeline_events", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_events_due")
        batch_op.drop_index("ix_stripeline_events_type_received")
        batch_op.drop_index("ix_stripeline_events_object")
        batch_op.create_index(
            "ix_stripeline_events_type_received",
            ["type", "received_at", "id"],
            unique=False,
            sqlite_where=_NOT_PENDING,
            postgresql_where=_NOT_PENDING,
        )
        batch_op.create_index(
            "ix_stripeline_events_object",
            ["object_id"],
            unique=False,
            sqlite_where=_NOT_PENDING,
            postgresql_where=_NOT_PENDING,
        )


def downgrade() -> None:
    with op.batch_alter_table("stripeline_events", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_events_object")
        batch_op.drop_index("ix_stripeline_events_type_received")
        batch_op.create_index("ix_stripeline_events_object", ["object_id"], unique=False)
        batch_op.create_index(
            "ix_stripeline_events_type_received", ["type", "received_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_stripeline_events_due", ["status", "next_attempt_at"], unique=False
        )
