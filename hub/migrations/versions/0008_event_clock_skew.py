"""Events flag a device clock the hub does not believe, and lists go by the time the hub received them.

* ``events.clock_issue``: why the event's ``device_ts`` is not believed (``hub.ingest.clock``), or NULL.
  Events stored before this revision are judged here by the one rule that needs neither the batch nor the
  settings: a device time before 2020 (a Pi without a real-time clock starts at 1970).
* Indexes on ``received_at`` for the event lists, which now sort and filter by it unless asked for device time.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The default of EventClockSettings.earliest_device_time, spelled here: a migration must not change with the code.
EARLIEST_DEVICE_TIME: Final = datetime(2020, 1, 1, tzinfo=UTC)
RECEIVED_INDEXES: Final = {
    "ix_events_received": ["received_at", "id"],
    "ix_events_store_received": ["store_id", "received_at", "id"],
    "ix_events_device_id_received": ["device_id", "received_at", "id"],
}


def upgrade() -> None:
    """Add the flag, flag the stored events stamped before 2020, and index the receipt time."""
    op.add_column("events", sa.Column("clock_issue", sa.String(32), nullable=True))
    earliest = EARLIEST_DEVICE_TIME
    if op.get_bind().dialect.name == "sqlite":  # stored as naive UTC text
        earliest = earliest.replace(tzinfo=None)
    events = sa.table("events", sa.column("device_ts", sa.DateTime(timezone=True)), sa.column("clock_issue"))
    op.execute(events.update().where(events.c.device_ts < earliest).values(clock_issue="before_earliest"))
    for name, columns in RECEIVED_INDEXES.items():
        op.create_index(name, "events", columns)


def downgrade() -> None:
    """Drop the indexes and the flag."""
    for name in RECEIVED_INDEXES:
        op.drop_index(name, table_name="events")
    # Native on both databases (SQLite 3.35+ drops a column that no index or constraint names).
    op.execute("ALTER TABLE events DROP COLUMN clock_issue")
