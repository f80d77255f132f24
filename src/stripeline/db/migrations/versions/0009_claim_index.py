"""inbox: the claim reads due events in due order through a partial index

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 02:30:00.000000

The worker's claim asks for the first due events (``status IN ('pending',
'failed', 'processing') AND next_attempt_at <= now ORDER BY next_attempt_at
LIMIT n``). Through ``ix_stripeline_events_due`` (``status, next_attempt_at``)
it had to read every due event and sort them: with 400,000 events waiting on
PostgreSQL, 162 ms per claim (a sort spilled to disk), growing with the
backlog, so a worker that fell behind fell further behind. This index holds
only the events still to process, in due order: the claim reads its ``n``
rows and stops (0.2 ms with the same backlog). Processed, dead and ignored
events are not in it, so storing or finishing an event keeps it small.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TO_PROCESS = sa.text("status IN ('pending', 'failed', 'processing')")


def upgrade() -> None:
    with op.batch_alter_table("stripeline_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stripeline_events_claim",
            ["next_attempt_at"],
            unique=False,
            sqlite_where=_TO_PROCESS,
            postgresql_where=_TO_PROCESS,
        )


def downgrade() -> None:
    with op.batch_alter_table("stripeline_events", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_events_claim")
