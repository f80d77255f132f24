"""refetch queue

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 22:08:39.198857
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "stripeline_refetches",
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("object_type", sa.String(length=64), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("first_requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("account", "id", name=op.f("pk_stripeline_refetches")),
    )
    with op.batch_alter_table("stripeline_refetches", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_stripeline_refetches_due_at"), ["due_at"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("stripeline_refetches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripeline_refetches_due_at"))

    op.drop_table("stripeline_refetches")
