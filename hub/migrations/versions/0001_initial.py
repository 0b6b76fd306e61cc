"""Initial schema: stores, gateways, presence history, events, stream marks, rejected messages.

Revision ID: 0001
Revises:
Create Date: 2025-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written by hand, frozen: later changes go into new revisions, never into this one.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create every table of the hub."""
    op.create_table(
        "stores",
        sa.Column("store_id", sa.String(63), nullable=False),
        sa.Column("first_seen", UTC_TS, nullable=False),
        sa.Column("last_event_at", UTC_TS, nullable=True),
        sa.Column("event_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("store_id", name="pk_stores"),
    )
    op.create_table(
        "gateways",
        sa.Column("gateway_id", sa.String(63), nullable=False),
        sa.Column("store_id", sa.String(63), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=True),
        sa.Column("last_status_reason", sa.String(16), nullable=True),
        sa.Column("status_changed_at", UTC_TS, nullable=True),
        sa.Column("first_seen", UTC_TS, nullable=False),
        sa.Column("last_seen_at", UTC_TS, nullable=False),
        sa.Column("agent_version", sa.String(64), nullable=True),
        sa.Column("config_hash", sa.String(128), nullable=True),
        sa.Column("devices", sa.JSON(), nullable=False),
        sa.Column("last_health", sa.JSON(), nullable=True),
        sa.Column("last_health_at", UTC_TS, nullable=True),
        sa.ForeignKeyConstraint(["store_id"], ["stores.store_id"], name="fk_gateways_store_id_stores"),
        sa.PrimaryKeyConstraint("gateway_id", name="pk_gateways"),
    )
    op.create_index("ix_gateways_store_id", "gateways", ["store_id"])
    op.create_table(
        "gateway_presence",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("gateway_id", sa.String(63), nullable=False),
        sa.Column("store_id", sa.String(63), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("reported_at", UTC_TS, nullable=False),
        sa.Column("recorded_at", UTC_TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["gateway_id"], ["gateways.gateway_id"], name="fk_gateway_presence_gateway_id_gateways"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_gateway_presence"),
    )
    op.create_index("ix_gateway_presence_gateway_recorded", "gateway_presence", ["gateway_id", "recorded_at"])
    op.create_table(
        "events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("store_id", sa.String(63), nullable=False),
        sa.Column("gateway_id", sa.String(63), nullable=False),
        sa.Column("stream", sa.String(36), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("device_ts", UTC_TS, nullable=False),
        sa.Column("received_at", UTC_TS, nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.gateway_id"], name="fk_events_gateway_id_gateways"),
        sa.ForeignKeyConstraint(["store_id"], ["stores.store_id"], name="fk_events_store_id_stores"),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("event_id", name="uq_events_event_id"),
        sa.UniqueConstraint("gateway_id", "stream", "seq", name="uq_events_gateway_id_stream_seq"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_device_ts", "events", ["device_ts", "id"])
    op.create_index("ix_events_store_ts", "events", ["store_id", "device_ts", "id"])
    op.create_index("ix_events_gateway_ts", "events", ["gateway_id", "device_ts", "id"])
    op.create_index("ix_events_device_id_ts", "events", ["device_id", "device_ts", "id"])
    op.create_index("ix_events_kind_ts", "events", ["kind", "device_ts", "id"])
    op.create_table(
        "gateway_streams",
        sa.Column("gateway_id", sa.String(63), nullable=False),
        sa.Column("stream", sa.String(36), nullable=False),
        sa.Column("through_seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["gateway_id"], ["gateways.gateway_id"], name="fk_gateway_streams_gateway_id_gateways"
        ),
        sa.PrimaryKeyConstraint("gateway_id", "stream", name="pk_gateway_streams"),
    )
    op.create_table(
        "rejected_messages",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("received_at", UTC_TS, nullable=False),
        sa.Column("topic", sa.String(1024), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("payload_excerpt", sa.Text(), nullable=False),
        sa.Column("payload_bytes", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rejected_messages"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_rejected_messages_reason", "rejected_messages", ["reason"])


def downgrade() -> None:
    """Drop every table of the hub."""
    op.drop_index("ix_rejected_messages_reason", table_name="rejected_messages")
    op.drop_table("rejected_messages")
    op.drop_table("gateway_streams")
    for name in ("ix_events_kind_ts", "ix_events_device_id_ts", "ix_events_gateway_ts", "ix_events_store_ts",
                 "ix_events_device_ts"):
        op.drop_index(name, table_name="events")
    op.drop_table("events")
    op.drop_index("ix_gateway_presence_gateway_recorded", table_name="gateway_presence")
    op.drop_table("gateway_presence")
    op.drop_index("ix_gateways_store_id", table_name="gateways")
    op.drop_table("gateways")
    op.drop_table("stores")
