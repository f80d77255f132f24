"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 21:42:59.242943
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "stripeline_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripeline_attempts")),
    )
    with op.batch_alter_table("stripeline_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_stripeline_attempts_event_id"), ["event_id"], unique=False
        )

    op.create_table(
        "stripeline_cursors",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("position_time", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_stripeline_cursors")),
    )
    op.create_table(
        "stripeline_deliveries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("signed_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripeline_deliveries")),
    )
    with op.batch_alter_table("stripeline_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_stripeline_deliveries_event_id"), ["event_id"], unique=False
        )

    op.create_table(
        "stripeline_events",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=255), nullable=False),
        sa.Column("account", sa.String(length=255), nullable=True),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("api_version", sa.String(length=64), nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("object_id", sa.String(length=255), nullable=True),
        sa.Column("object_type", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_traceback", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripeline_events")),
    )
    with op.batch_alter_table("stripeline_events", schema=None) as batch_op:
        batch_op.create_index("ix_stripeline_events_created", ["created"], unique=False)
        batch_op.create_index(
            "ix_stripeline_events_due", ["status", "next_attempt_at"], unique=False
        )
        batch_op.create_index("ix_stripeline_events_object", ["object_id"], unique=False)
        batch_op.create_index("ix_stripeline_events_type", ["type"], unique=False)

    op.create_table(
        "stripeline_objects",
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("object", sa.String(length=64), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("marker", sa.BigInteger(), nullable=False),
        sa.Column("marker_rank", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account", "id", name=op.f("pk_stripeline_objects")),
    )
    with op.batch_alter_table("stripeline_objects", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stripeline_objects_object"), ["object"], unique=False)

    op.create_table(
        "stripeline_once",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_stripeline_once")),
    )


def downgrade() -> None:

    op.drop_table("stripeline_once")
    with op.batch_alter_table("stripeline_objects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripeline_objects_object"))

    op.drop_table("stripeline_objects")
    with op.batch_alter_table("stripeline_events", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_events_type")
        batch_op.drop_index("ix_stripeline_events_object")
        batch_op.drop_index("ix_stripeline_events_due")
        batch_op.drop_index("ix_stripeline_events_created")

    op.drop_table("stripeline_events")
    with op.batch_alter_table("stripeline_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripeline_deliveries_event_id"))

    op.drop_table("stripeline_deliveries")
    op.drop_table("stripeline_cursors")
    with op.batch_alter_table("stripeline_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripeline_attempts_event_id"))

    op.drop_table("stripeline_attempts")
