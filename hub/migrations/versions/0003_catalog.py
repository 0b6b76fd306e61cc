"""The catalog and planogram: SKUs, store profiles, shelves and slots.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written by hand, frozen: later changes go into new revisions, never into this one.
UTC_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create skus, store_profiles, shelves and slots."""
    op.create_table(
        "skus",
        sa.Column("sku_id", sa.String(63), nullable=False),
        sa.Column("gtin", sa.String(14), nullable=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("unit_weight_g", sa.Numeric(10, 3), nullable=True),
        sa.Column("pack_size", sa.Integer(), nullable=False),
        sa.Column("price", sa.Numeric(12, 4), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.CheckConstraint("pack_size >= 1", name="ck_skus_pack_size_positive"),
        sa.CheckConstraint("price >= 0", name="ck_skus_price_not_negative"),
        sa.CheckConstraint("unit_weight_g > 0", name="ck_skus_unit_weight_positive"),
        sa.PrimaryKeyConstraint("sku_id", name="pk_skus"),
        sa.UniqueConstraint("gtin", name="uq_skus_gtin"),
    )
    op.create_table(
        "store_profiles",
        sa.Column("store_id", sa.String(63), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("opening_hours", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint("store_id", name="pk_store_profiles"),
    )
    op.create_table(
        "shelves",
        sa.Column("store_id", sa.String(63), nullable=False),
        sa.Column("shelf_id", sa.String(128), nullable=False),
        sa.ForeignKeyConstraint(["store_id"], ["store_profiles.store_id"], name="fk_shelves_store_id_store_profiles"),
        sa.PrimaryKeyConstraint("store_id", "shelf_id", name="pk_shelves"),
    )
    op.create_table(
        "slots",
        sa.Column("store_id", sa.String(63), nullable=False),
        sa.Column("shelf_id", sa.String(128), nullable=False),
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sku_id", sa.String(63), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("min_quantity", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.CheckConstraint("slot BETWEEN 1 AND 255", name="ck_slots_slot_range"),
        sa.CheckConstraint("capacity >= 1", name="ck_slots_capacity_positive"),
        sa.CheckConstraint("min_quantity >= 0", name="ck_slots_min_quantity_not_negative"),
        sa.CheckConstraint("capacity >= min_quantity", name="ck_slots_capacity_covers_minimum"),
        sa.ForeignKeyConstraint(
            ["store_id", "shelf_id"], ["shelves.store_id", "shelves.shelf_id"], name="fk_slots_store_id_shelves"
        ),
        sa.ForeignKeyConstraint(["sku_id"], ["skus.sku_id"], name="fk_slots_sku_id_skus"),
        sa.PrimaryKeyConstraint("store_id", "shelf_id", "slot", name="pk_slots"),
    )
    op.create_index("ix_slots_sku_id", "slots", ["sku_id"])


def downgrade() -> None:
    """Drop the catalog tables."""
    op.drop_index("ix_slots_sku_id", table_name="slots")
    for table in ("slots", "shelves", "store_profiles", "skus"):
        op.drop_table(table)
