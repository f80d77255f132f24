"""typed mirror tables

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 22:24:25.575277
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stripeline_charges",
        sa.Column("customer", sa.String(length=255), nullable=True),
        sa.Column("payment_intent", sa.String(length=255), nullable=True),
        sa.Column("payment_method", sa.String(length=255), nullable=True),
        sa.Column("invoice", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=64), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("amount_captured", sa.BigInteger(), nullable=True),
        sa.Column("amount_refunded", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=16), nullable=True),
        sa.Column("paid", sa.Boolean(), nullable=True),
        sa.Column("captured", sa.Boolean(), nullable=True),
        sa.Column("refunded", sa.Boolean(), nullable=True),
        sa.Column("disputed", sa.Boolean(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=True),
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
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
        sa.PrimaryKeyConstraint("account", "id", name=op.f("pk_stripeline_charges")),
    )
    with op.batch_alter_table("stripeline_charges", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stripeline_charges_customer", ["account", "customer"], unique=False
        )
        batch_op.create_index(
            "ix_stripeline_charges_payment_intent", ["account", "payment_intent"], unique=False
        )

    op.create_table(
        "stripeline_checkout_sessions",
        sa.Column("customer", sa.String(length=255), nullable=True),
        sa.Column("customer_email", sa.String(length=512), nullable=True),
        sa.Column("client_reference_id", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("payment_status", sa.String(length=32), nullable=True),
        sa.Column("mode", sa.String(length=32), nullable=True),
        sa.Column("amount_total", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=16), nullable=True),
        sa.Column("payment_intent", sa.String(length=255), nullable=True),
        sa.Column("subscription", sa.String(length=255), nullable=True),
        sa.Column("setup_intent", sa.String(length=255), nullable=True),
        sa.Column("invoice", sa.String(length=255), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=True),
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
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
        sa.PrimaryKeyConstraint("account", "id", name=op.f("pk_stripeline_checkout_sessions")),
    )
    with op.batch_alter_table("stripeline_checkout_sessions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stripeline_checkout_sessions_customer", ["account", "customer"], unique=False
        )
        batch_op.create_index(
            "ix_stripeline_checkout_sessions_reference",
            ["account", "client_reference_id"],
            unique=False,
        )

    op.create_table(
        "stripeline_customer_links",
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("app_user_id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "account", "app_user_id", name=op.f("pk_stripeline_customer_links")
        ),
    )
    with op.batch_alter_table("stripeline_customer_links", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stripeline_customer_links_customer", ["account", "customer_id"], unique=False
        )

    op.create_table(
        "stripeline_customers",
        sa.Column("email", sa.String(length=512), nullable=True),
        sa.Column("name", sa.String(length=512), nullable=True),
        sa.Column("currency", sa.String(length=16), nullable=True),
        sa.Column("balance", sa.BigInteger(), nullable=True),
        sa.Column("delinquent", sa.Boolean(), nullable=True),
        sa.Column("default_payment_method", sa.String(length=255), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=True),
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
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
        sa.PrimaryKeyConstraint("account", "id", name=op.f("pk_stripeline_customers")),
    )
    with op.batch_alter_table("stripeline_customers", schema=None) as batch_op:
        batch_op.create_index("ix_stripeline_customers_email", ["account", "email"], unique=False)

    op.create_table(
        "stripeline_disputes",
        sa.Column("charge", sa.String(length=255), nullable=True),
        sa.Column("payment_intent", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=16), nullable=True),
        sa.Column("due_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("has_evidence", sa.Boolean(), nullable=True),
        sa.Column("past_due", sa.Boolean(), nullable=True),
        sa.Column("is_charge_refundable", sa.Boolean(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=True),
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
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
        sa.PrimaryKeyConstraint("account", "id", name=op.f("pk_stripeline_disputes")),
    )
    with op.batch_alter_table("stripeline_disputes", schema=None) as batch_op:
        batch_op.create_index("ix_stripeline_disputes_charge", ["account", "charge"], unique=False)
        batch_op.create_index("ix_stripeline_disputes_due_by", ["account", "due_by"], unique=False)
        batch_op.create_index("ix_stripeline_disputes_status", ["account", "status"], unique=False)

    op.create_table(
        "stripeline_invoice_lines",
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("invoice", sa.String(length=255), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=16), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("quantity", sa.BigInteger(), nullable=True),
        sa.Column("price", sa.String(length=255), nullable=True),
        sa.Column("product", sa.String(length=255), nullable=True),
        sa.Column("subscription", sa.String(length=255), nullable=True),
        sa.Column("subscription_item", sa.String(length=255), nullable=True),
        sa.Column("invoice_item", sa.String(length=255), nullable=True),
        sa.Column("proration", sa.Boolean(), nullable=True),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "account", "invoice", "id", name=op.f("pk_stripeline_invoice_lines")
        ),
    )
    op.create_table(
        "stripeline_invoices",
        sa.Column("customer", sa.String(length=255), nullable=True),
        sa.Column("subscription", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=64), nullable=True),
        sa.Column("currency", sa.String(length=16), nullable=True),
        sa.Column("amount_due", sa.BigInteger(), nullable=True),
        sa.Column("amount_paid", sa.BigInteger(), nullable=True),
        sa.Column("amount_remaining", sa.BigInteger(), nullable=True),
        sa.Column("subtotal", sa.BigInteger(), nullable=True),
        sa.Column("total", sa.BigInteger(), nullable=True),
        sa.Column("paid", sa.Boolean(), nullable=True),
        sa.Column("number", sa.String(length=255), nullable=True),
        sa.Column("billing_reason", sa.String(length=64), nullable=True),
        sa.Column("collection_method", sa.String(length=32), nullable=True),
        sa.Column("payment_intent", sa.String(length=255), nullable=True),
        sa.Column("charge", sa.String(length=255), nullable=True),
        sa.Column("due_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lines_total_count", sa.Integer(), nullable=True),
        sa.Column("lines_complete", sa.Boolean(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=True),
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
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
        sa.PrimaryKeyConstraint("account", "id", name=op.f("pk_stripeline_invoices")),
    )
    with op.batch_alter_table("stripeline_invoices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stripeline_invoices_customer", ["account", "customer", "status"], unique=False
        )
        batch_op.create_index(
            "ix_stripeline_invoices_due_date", ["account", "status", "due_date"], unique=False
        )
        batch_op.create_index(
            "ix_stripeline_invoices_subscription", ["account", "subscription"], unique=False
        )

    op.create_table(
        "stripeline_payment_intents",
        sa.Column("customer", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=64), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("amount_received", sa.BigInteger(), nullable=True),
        sa.Column("amount_capturable", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=16), nullable=True),
        sa.Column("capture_method", sa.String(length=32), nullable=True),
        sa.Column("payment_method", sa.String(length=255), nullable=True),
        sa.Column("latest_charge", sa.String(length=255), nullable=True),
        sa.Column("invoice", sa.String(length=255), nullable=True),
        sa.Column("cancellation_reason", sa.String(length=64), nullable=True),
        sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=True),
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
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
        sa.PrimaryKeyConstraint("account", "id", name=op.f("pk_stripeline_payment_intents")),
    )
    with op.batch_alter_table("stripeline_payment_intents", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stripeline_payment_intents_customer",
            ["account", "customer", "status"],
            unique=False,
        )
        batch_op.create_index(
            "ix_stripeline_payment_intents_status", ["account", "status"], unique=False
        )

    op.create_table(
        "stripeline_payment_methods",
        sa.Column("customer", sa.String(length=255), nullable=True),
        sa.Column("type", sa.String(length=64), nullable=True),
        sa.Column("card_brand", sa.String(length=32), nullable=True),
        sa.Column("card_last4", sa.String(length=8), nullable=True),
        sa.Column("card_exp_month", sa.Integer(), nullable=True),
        sa.Column("card_exp_year", sa.Integer(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=True),
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
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
        sa.PrimaryKeyConstraint("account", "id", name=op.f("pk_stripeline_payment_methods")),
    )
    with op.batch_alter_table("stripeline_payment_methods", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stripeline_payment_methods_customer", ["account", "customer"], unique=False
        )

    op.create_table(
        "stripeline_prices",
        sa.Column("product", sa.String(length=255), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=True),
        sa.Column("currency", sa.String(length=16), nullable=True),
        sa.Column("unit_amount", sa.BigInteger(), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=True),
        sa.Column("recurring_interval", sa.String(length=16), nullable=True),
        sa.Column("recurring_interval_count", sa.Integer(), nullable=True),
        sa.Column("lookup_key", sa.String(length=255), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=True),
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
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
        sa.PrimaryKeyConstraint("account", "id", name=op.f("pk_stripeline_prices")),
    )
    with op.batch_alter_table("stripeline_prices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stripeline_prices_lookup_key", ["account", "lookup_key"], unique=False
        )
        batch_op.create_index("ix_stripeline_prices_product", ["account", "product"], unique=False)

    op.create_table(
        "stripeline_products",
        sa.Column("name", sa.String(length=512), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=True),
        sa.Column("default_price", sa.String(length=255), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=True),
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
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
        sa.PrimaryKeyConstraint("account", "id", name=op.f("pk_stripeline_products")),
    )
    op.create_table(
        "stripeline_refunds",
        sa.Column("charge", sa.String(length=255), nullable=True),
        sa.Column("payment_intent", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=16), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=True),
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
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
        sa.PrimaryKeyConstraint("account", "id", name=op.f("pk_stripeline_refunds")),
    )
    with op.batch_alter_table("stripeline_refunds", schema=None) as batch_op:
        batch_op.create_index("ix_stripeline_refunds_charge", ["account", "charge"], unique=False)
        batch_op.create_index(
            "ix_stripeline_refunds_payment_intent", ["account", "payment_intent"], unique=False
        )

    op.create_table(
        "stripeline_subscription_items",
        sa.Column("subscription", sa.String(length=255), nullable=True),
        sa.Column("price", sa.String(length=255), nullable=True),
        sa.Column("product", sa.String(length=255), nullable=True),
        sa.Column("quantity", sa.BigInteger(), nullable=True),
        sa.Column("current_period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=True),
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
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
        sa.PrimaryKeyConstraint("account", "id", name=op.f("pk_stripeline_subscription_items")),
    )
    with op.batch_alter_table("stripeline_subscription_items", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stripeline_subscription_items_subscription",
            ["account", "subscription"],
            unique=False,
        )

    op.create_table(
        "stripeline_subscriptions",
        sa.Column("customer", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=64), nullable=True),
        sa.Column("currency", sa.String(length=16), nullable=True),
        sa.Column("collection_method", sa.String(length=32), nullable=True),
        sa.Column("current_period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=True),
        sa.Column("cancel_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trial_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trial_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("latest_invoice", sa.String(length=255), nullable=True),
        sa.Column("default_payment_method", sa.String(length=255), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=True),
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
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
        sa.PrimaryKeyConstraint("account", "id", name=op.f("pk_stripeline_subscriptions")),
    )
    with op.batch_alter_table("stripeline_subscriptions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stripeline_subscriptions_customer", ["account", "customer", "status"], unique=False
        )
        batch_op.create_index(
            "ix_stripeline_subscriptions_period_end",
            ["account", "status", "current_period_end"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("stripeline_subscriptions", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_subscriptions_period_end")
        batch_op.drop_index("ix_stripeline_subscriptions_customer")

    op.drop_table("stripeline_subscriptions")
    with op.batch_alter_table("stripeline_subscription_items", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_subscription_items_subscription")

    op.drop_table("stripeline_subscription_items")
    with op.batch_alter_table("stripeline_refunds", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_refunds_payment_intent")
        batch_op.drop_index("ix_stripeline_refunds_charge")

    op.drop_table("stripeline_refunds")
    op.drop_table("stripeline_products")
    with op.batch_alter_table("stripeline_prices", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_prices_product")
        batch_op.drop_index("ix_stripeline_prices_lookup_key")

    op.drop_table("stripeline_prices")
    with op.batch_alter_table("stripeline_payment_methods", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_payment_methods_customer")

    op.drop_table("stripeline_payment_methods")
    with op.batch_alter_table("stripeline_payment_intents", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_payment_intents_status")
        batch_op.drop_index("ix_stripeline_payment_intents_customer")

    op.drop_table("stripeline_payment_intents")
    with op.batch_alter_table("stripeline_invoices", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_invoices_subscription")
        batch_op.drop_index("ix_stripeline_invoices_due_date")
        batch_op.drop_index("ix_stripeline_invoices_customer")

    op.drop_table("stripeline_invoices")
    op.drop_table("stripeline_invoice_lines")
    with op.batch_alter_table("stripeline_disputes", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_disputes_status")
        batch_op.drop_index("ix_stripeline_disputes_due_by")
        batch_op.drop_index("ix_stripeline_disputes_charge")

    op.drop_table("stripeline_disputes")
    with op.batch_alter_table("stripeline_customers", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_customers_email")

    op.drop_table("stripeline_customers")
    with op.batch_alter_table("stripeline_customer_links", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_customer_links_customer")

    op.drop_table("stripeline_customer_links")
    with op.batch_alter_table("stripeline_checkout_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_checkout_sessions_reference")
        batch_op.drop_index("ix_stripeline_checkout_sessions_customer")

    op.drop_table("stripeline_checkout_sessions")
    with op.batch_alter_table("stripeline_charges", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeline_charges_payment_intent")
        batch_op.drop_index("ix_stripeline_charges_customer")

    op.drop_table("stripeline_charges")
