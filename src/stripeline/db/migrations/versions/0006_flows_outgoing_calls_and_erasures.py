"""flows: outgoing calls and erasures

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 21:09:29.058017

``stripeline_calls``: every outgoing write to Stripe, recorded before it is
sent (its idempotency key, its parameters' hash, the object it made), so a
retry after a crash neither makes a second object nor replays a changed one.
``stripeline_erasures``: that a person's data was erased (``customers.forget``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stripeline_calls",
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("params_hash", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("object_type", sa.String(length=64), nullable=True),
        sa.Column("object_id", sa.String(length=255), nullable=True),
        sa.Column(
            "result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("error_type", sa.String(length=64), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account", "key", name=op.f("pk_stripeline_calls")),
    )
    with op.batch_alter_table("stripeline_calls", schema=None) as batch_op:
        batch_op.create_index("ix_stripeline_calls_object", ["account", "object_id"], unique=False)

    op.create_table(
        "stripeline_erasures",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("app_user_id", sa.String(length=255), nullable=True),
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("stripe_action", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("mirror_rows", sa.Integer(), nullable=False),
        sa.Column("event_payloads", sa.Integer(), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripeline_erasures")),
    )
    with op.batch_alter_table("stripeline_erasures", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stripeline_erasures_customer", ["account", "customer_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("stripeline_erasures", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_erasures_customer")

    op.drop_table("stripeline_erasures")
    with op.batch_alter_table("stripeline_calls", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_calls_object")

    op.drop_table("stripeline_calls")
