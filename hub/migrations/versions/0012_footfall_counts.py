"""Footfall from entrance cameras (issue 17).

* ``footfall_counts``: per store, gateway, camera device, counting line and period start (a minute by default),
  the people counted entering and leaving, and the event that set them. Keyed so that writing a period again
  sets the same counts: a replayed or re-applied event never counts twice.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create footfall_counts."""
    op.create_table(
        "footfall_counts",
        sa.Column("store_id", sa.String(63), nullable=False),
        sa.Column("gateway_id", sa.String(63), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("line", sa.String(64), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_s", sa.Integer(), nullable=False),
        sa.Column("entered", sa.Integer(), nullable=False),
        sa.Column("exited", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("entered >= 0 AND exited >= 0", name="ck_footfall_counts_counts_not_negative"),
        sa.PrimaryKeyConstraint(
            "store_id", "gateway_id", "device_id", "line", "period_start", name="pk_footfall_counts"
        ),
    )
    op.create_index("ix_footfall_counts_store_period", "footfall_counts", ["store_id", "period_start"])
    op.create_index("ix_footfall_counts_period", "footfall_counts", ["period_start"])


def downgrade() -> None:
    """Drop footfall_counts."""
    op.drop_index("ix_footfall_counts_period", table_name="footfall_counts")
    op.drop_index("ix_footfall_counts_store_period", table_name="footfall_counts")
    op.drop_table("footfall_counts")
