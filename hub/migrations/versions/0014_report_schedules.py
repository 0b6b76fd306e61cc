"""Scheduled reports (issue 16): the schedules and their deliveries.

* ``report_schedules``: which report kind and format, which stores, when (daily or weekly at a local time in a
  zone), where (a webhook, its secret sealed; e-mail recipients), paused or not, and when it fires next.
* ``report_deliveries``: one row per run and channel, unique on (schedule, first day of the period, channel), so a
  period is planned once; attempts, the next retry, the last error in words, the size sent.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create report_schedules and report_deliveries."""
    op.create_table(
        "report_schedules",
        sa.Column("schedule_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("store_scope", sa.String(16), nullable=False),
        sa.Column("region", sa.String(63), nullable=True),
        sa.Column("store_ids", sa.JSON(), nullable=True),
        sa.Column("cadence", sa.String(16), nullable=False),
        sa.Column("weekday", sa.Integer(), nullable=True),
        sa.Column("local_time", sa.String(5), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("webhook_url", sa.String(2048), nullable=True),
        sa.Column("webhook_secret_sealed", sa.Text(), nullable=True),
        sa.Column("email_to", sa.JSON(), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("next_run_at", UTC_TS, nullable=False),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint("schedule_id", name="pk_report_schedules"),
    )
    op.create_index("ix_report_schedules_due", "report_schedules", ["enabled", "next_run_at"])
    op.create_table(
        "report_deliveries",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("schedule_id", sa.String(36), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", UTC_TS, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_attempt_at", UTC_TS, nullable=True),
        sa.Column("filename", sa.String(255), nullable=True),
        sa.Column("bytes", sa.Integer(), nullable=True),
        sa.Column("scheduled_for", UTC_TS, nullable=False),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("delivered_at", UTC_TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["report_schedules.schedule_id"],
            name="fk_report_deliveries_schedule_id_report_schedules",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_report_deliveries"),
        sa.UniqueConstraint(
            "schedule_id", "period_start", "channel", name="uq_report_deliveries_schedule_id_period_start_channel"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_report_deliveries_due", "report_deliveries", ["status", "next_attempt_at"])


def downgrade() -> None:
    """Drop report_deliveries and report_schedules."""
    op.drop_index("ix_report_deliveries_due", table_name="report_deliveries")
    op.drop_table("report_deliveries")
    op.drop_index("ix_report_schedules_due", table_name="report_schedules")
    op.drop_table("report_schedules")
