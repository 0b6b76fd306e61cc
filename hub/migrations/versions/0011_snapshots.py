"""Camera stills and the cameras that watch the slots (issue 17).

* ``snapshots``: one row per still a gateway uploaded (per store: the same bytes from two stores are two stills),
  where its file lies under the snapshot directory, and when retention deletes it (indexed for the purge).
* ``slots.camera_id``: the camera the planogram says watches a slot; a shelf sweep's evidence is its still.
  Nullable: planograms imported before it (and files without the column) name none.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create snapshots; add slots.camera_id."""
    op.create_table(
        "snapshots",
        sa.Column("store_id", sa.String(63), nullable=False),
        sa.Column("ref", sa.String(64), nullable=False),
        sa.Column("gateway_id", sa.String(63), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=True),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("size", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("store_id", "ref", name=op.f("pk_snapshots")),
    )
    op.create_index("ix_snapshots_expires_at", "snapshots", ["expires_at"])
    op.create_index("ix_snapshots_store_device_taken", "snapshots", ["store_id", "device_id", "taken_at"])
    with op.batch_alter_table("slots") as batch:
        batch.add_column(sa.Column("camera_id", sa.String(128), nullable=True))


def downgrade() -> None:
    """Drop slots.camera_id and snapshots."""
    with op.batch_alter_table("slots") as batch:
        batch.drop_column("camera_id")
    op.drop_index("ix_snapshots_store_device_taken", table_name="snapshots")
    op.drop_index("ix_snapshots_expires_at", table_name="snapshots")
    op.drop_table("snapshots")
