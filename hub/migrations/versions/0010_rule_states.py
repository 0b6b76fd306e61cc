"""Rule states shared by N hub workers on one shared subscription (issue 19).

* ``rule_states``: one row per store, its rule states, waiting shrink picks, recent snapshots and newest event
  time, written under the store's advisory lock with a version that goes up by one per write. Only the shared
  mode (``shared_subscription_group`` set, PostgreSQL) reads and writes it; one hub process keeps its states in
  memory as before. Created on both databases so the schema is one.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
# 0009 is another change of the same release; whichever is merged second revises the other.
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create rule_states."""
    op.create_table(
        "rule_states",
        sa.Column("store_id", sa.String(63), primary_key=True),
        sa.Column("version", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop rule_states."""
    op.drop_table("rule_states")
