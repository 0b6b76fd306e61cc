"""Self-test reports of gateways (issue 15).

* ``selftest_reports``: what a technician proved of each device of a gateway with ``storegate provision selftest``,
  uploaded by the gateway (its certificate) to the gateway listener; read, newest first, per gateway through
  ``GET /api/v1/stores/{store_id}/gateways/{gateway_id}/selftests``.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create selftest_reports."""
    op.create_table(
        "selftest_reports",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("store_id", sa.String(63), nullable=False),
        sa.Column("gateway_id", sa.String(63), nullable=False),
        sa.Column("received_at", UTC_TS, nullable=False),
        sa.Column("started_at", UTC_TS, nullable=False),
        sa.Column("finished_at", UTC_TS, nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_selftest_reports"),
    )
    op.create_index("ix_selftest_reports_gateway", "selftest_reports", ["store_id", "gateway_id", "received_at"])


def downgrade() -> None:
    """Drop selftest_reports."""
    op.drop_index("ix_selftest_reports_gateway", table_name="selftest_reports")
    op.drop_table("selftest_reports")
