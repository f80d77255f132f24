"""console: audit log and the event list's indexes

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 22:00:00.000000

``stripeline_console_audit``: who did what in the operator console, and when.
Three indexes on ``stripeline_events`` let the console page its event list
newest first (alone, by status, by type) without sorting the inbox; one on
``stripeline_attempts.finished_at`` counts the last hour's attempts.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stripeline_console_audit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripeline_console_audit")),
    )
    with op.batch_alter_table("stripeline_console_audit", schema=None) as batch_op:
        batch_op.create_index("ix_stripeline_console_audit_at", ["at"], unique=False)
    with op.batch_alter_table("stripeline_events", schema=None) as batch_op:
        batch_op.create_index("ix_stripeline_events_received", ["received_at", "id"], unique=False)
        batch_op.create_index(
            "ix_stripeline_events_status_received", ["status", "received_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_stripeline_events_type_received", ["type", "received_at", "id"], unique=False
        )
    with op.batch_alter_table("stripeline_attempts", schema=None) as batch_op:
        batch_op.create_index("ix_stripeline_attempts_finished", ["finished_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("stripeline_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_attempts_finished")
    with op.batch_alter_table("stripeline_events", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_events_type_received")
        batch_op.drop_index("ix_stripeline_events_status_received")
        batch_op.drop_index("ix_stripeline_events_received")
    with op.batch_alter_table("stripeline_console_audit", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_console_audit_at")
    op.drop_table("stripeline_console_audit")
