"""first delivery on the event row

Revision ID: 0004
Revises: 0003

The first arrival of an event is recorded on its row; stripeline_deliveries
keeps the later ones (one insert less per webhook).
Create Date: 2026-11-26 23:16:11.005180
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("stripeline_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signed_at", sa.BigInteger(), nullable=True))
    # The first arrival moves from stripeline_deliveries onto the event row.
    op.execute(
        "UPDATE stripeline_events SET signed_at = ("
        " SELECT d.signed_at FROM stripeline_deliveries d"
        " WHERE d.event_id = stripeline_events.id ORDER BY d.id LIMIT 1)"
    )
    op.execute(
        "DELETE FROM stripeline_deliveries WHERE id IN ("
        " SELECT MIN(id) FROM stripeline_deliveries GROUP BY event_id)"
    )


def downgrade() -> None:
    op.execute(
        "INSERT INTO stripeline_deliveries (event_id, received_at, source, signed_at)"
        " SELECT id, received_at, source, signed_at FROM stripeline_events"
    )
    with op.batch_alter_table("stripeline_events", schema=None) as batch_op:
        batch_op.drop_column("signed_at")
