"""worker: processed events counted by their processed_at; payloads stored apart;
two unused inbox indexes dropped

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 00:30:00.000000

Events the worker applies in bulk (no handler wants them) no longer write an
attempt row each: their one attempt is on the event row (``attempts``,
``processed_at``). The console counts the events processed per minute from
``processed_at``, through a partial index of the processed ones (an event
is inserted without ``processed_at``: the webhook's insert does not touch it).

PostgreSQL: the payload column is stored ``EXTERNAL`` (out of line, not
compressed). Claiming and finishing an event updates its row; with the
payload (~3 KB) inline, each update copied it. Out of line, an update copies
a pointer. Rows already stored keep their storage until rewritten.

Two indexes of ``stripeline_events`` no query reads are dropped: ``type``
(the console's ``type, received_at, id`` index starts with it) and
``created``. Every index of the inbox is written when an event is stored,
and on PostgreSQL again on each update of its status.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PROCESSED = sa.text("processed_at IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("stripeline_events", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_events_type")
        batch_op.drop_index("ix_stripeline_events_created")
        batch_op.create_index(
            "ix_stripeline_events_processed",
            ["processed_at"],
            unique=False,
            sqlite_where=_PROCESSED,
            postgresql_where=_PROCESSED,
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE stripeline_events ALTER COLUMN payload SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE stripeline_events ALTER COLUMN payload SET STORAGE EXTENDED")
    with op.batch_alter_table("stripeline_events", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_events_processed")
        batch_op.create_index("ix_stripeline_events_created", ["created"], unique=False)
        batch_op.create_index("ix_stripeline_events_type", ["type"], unique=False)
