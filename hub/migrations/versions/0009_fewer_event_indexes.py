"""Two indexes of ``events`` go: each cost every insert, and no query needs them.

* ``ix_events_gateway_ts`` (store, gateway, device time): a gateway's events listed by device time are read
  through its store's index, ``ix_events_store_ts`` (a store has a few gateways), as lists by receipt time already
  are (0008).
* ``ix_events_kind_ts`` (kind, device time): kinds are few, so a list of one kind by device time reads
  ``ix_events_device_ts`` newest first, as a list of one kind by receipt time reads ``ix_events_received``; the
  cold-chain report filters a store's readings through ``ix_events_store_ts``, the rules' warm-up takes every
  kind but a few since a time through ``ix_events_device_ts``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DROPPED_INDEXES: Final = {
    "ix_events_gateway_ts": ["store_id", "gateway_id", "device_ts", "id"],
    "ix_events_kind_ts": ["kind", "device_ts", "id"],
}


def upgrade() -> None:
    """Drop the two indexes."""
    for name in DROPPED_INDEXES:
        op.drop_index(name, table_name="events")


def downgrade() -> None:
    """Create them again."""
    for name, columns in DROPPED_INDEXES.items():
        op.create_index(name, "events", columns)
