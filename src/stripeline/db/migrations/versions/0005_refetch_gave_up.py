"""refetch gave up

Revision ID: 0005
Revises: 0004

A re-fetch that can never succeed (Stripe refuses the read: permission,
authentication, an invalid request) stops after a bounded number of
attempts: ``gave_up_at`` marks it, and such rows are never claimed again
until a new request for the object comes in.
Create Date: 2026-11-27 16:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("stripeline_refetches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gave_up_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stripeline_refetches", schema=None) as batch_op:
        batch_op.drop_column("gave_up_at")
