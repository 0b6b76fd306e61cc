"""Data loss records, and the highest accounted seq of each stream.

``data_losses`` keeps the ranges that gateways report as lost (``outbox.loss`` events).
``gateway_streams.max_seq`` is the highest seq stored or recorded lost; existing streams
get it from their stored events.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written by hand, frozen: later changes go into new revisions, never into this one.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Add gateway_streams.max_seq (filled from the events) and the data_losses table."""
    op.add_column("gateway_streams", sa.Column("max_seq", sa.BigInteger(), server_default="0", nullable=False))
    op.execute(
        """
        UPDATE gateway_streams SET max_seq = COALESCE(
            (SELECT MAX(events.seq) FROM events
             WHERE events.gateway_id = gateway_streams.gateway_id AND events.stream = gateway_streams.stream),
            0)
        """
    )
    op.execute("UPDATE gateway_streams SET max_seq = through_seq WHERE max_seq < through_seq")
    op.create_table(
        "data_losses",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("store_id", sa.String(63), nullable=False),
        sa.Column("gateway_id", sa.String(63), nullable=False),
        sa.Column("stream", sa.String(36), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("by_kind", sa.JSON(), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("reported_at", UTC_TS, nullable=False),
        sa.Column("recorded_at", UTC_TS, nullable=False),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.gateway_id"], name="fk_data_losses_gateway_id_gateways"),
        sa.ForeignKeyConstraint(["store_id"], ["stores.store_id"], name="fk_data_losses_store_id_stores"),
        sa.PrimaryKeyConstraint("id", name="pk_data_losses"),
        sa.UniqueConstraint("event_id", "first_seq", name="uq_data_losses_event_id_first_seq"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_data_losses_stream", "data_losses", ["gateway_id", "stream", "first_seq"])
    op.create_index("ix_data_losses_store_reported", "data_losses", ["store_id", "reported_at", "id"])
    op.create_index("ix_data_losses_reported", "data_losses", ["reported_at", "id"])


def downgrade() -> None:
    """Drop data_losses and gateway_streams.max_seq."""
    for name in ("ix_data_losses_reported", "ix_data_losses_store_reported", "ix_data_losses_stream"):
        op.drop_index(name, table_name="data_losses")
    op.drop_table("data_losses")
    with op.batch_alter_table("gateway_streams") as batch:
        batch.drop_column("max_seq")
