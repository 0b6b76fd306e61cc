"""Alerts newest first, whatever their store or state (issue 16).

* ``ix_alerts_opened`` on ``alerts (opened_at, alert_id)``: the console's alert list shows the newest alerts of every
  store and state first, 100 at a time. With 100,000 alerts the existing indexes (by store, by status) left the
  database sorting the whole table for each page; this one reads the newest rows in order and stops at 100.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ix_alerts_opened."""
    op.create_index("ix_alerts_opened", "alerts", ["opened_at", "alert_id"])


def downgrade() -> None:
    """Drop ix_alerts_opened."""
    op.drop_index("ix_alerts_opened", table_name="alerts")
