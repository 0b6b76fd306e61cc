"""Gateway software updates (issue 15): releases, rollouts and each gateway's outcome.

* ``releases``: an uploaded wheel of the agent software: version, SHA-256, size, file, who uploaded it.
* ``rollouts``: a release offered to gateways in stages, with its probation, failure threshold and state.
* ``rollout_targets``: one row per gateway of a rollout: its stage, its ``update`` command, its outcome.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create releases, rollouts and rollout_targets."""
    op.create_table(
        "releases",
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", BIG_ID, nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("uploaded_at", UTC_TS, nullable=False),
        sa.Column("uploaded_by", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_releases")),
    )
    op.create_table(
        "rollouts",
        sa.Column("rollout_id", sa.String(36), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stages", sa.JSON(), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("probation_s", sa.Integer(), nullable=False),
        sa.Column("max_failed", sa.Integer(), nullable=False),
        sa.Column("answer_within_s", sa.Integer(), nullable=False),
        sa.Column("selection", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.ForeignKeyConstraint(["version"], ["releases.version"], name=op.f("fk_rollouts_version_releases")),
        sa.PrimaryKeyConstraint("rollout_id", name=op.f("pk_rollouts")),
    )
    op.create_index(op.f("ix_rollouts_version"), "rollouts", ["version"])
    op.create_index(op.f("ix_rollouts_status"), "rollouts", ["status"])
    op.create_table(
        "rollout_targets",
        sa.Column("rollout_id", sa.String(36), nullable=False),
        sa.Column("store_id", sa.String(63), nullable=False),
        sa.Column("gateway_id", sa.String(63), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("command_id", sa.String(36), nullable=True),
        sa.Column("sent_at", UTC_TS, nullable=True),
        sa.Column("finished_at", UTC_TS, nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["rollout_id"], ["rollouts.rollout_id"], name=op.f("fk_rollout_targets_rollout_id_rollouts")
        ),
        sa.PrimaryKeyConstraint("rollout_id", "store_id", "gateway_id", name=op.f("pk_rollout_targets")),
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_table("rollout_targets")
    op.drop_index(op.f("ix_rollouts_status"), table_name="rollouts")
    op.drop_index(op.f("ix_rollouts_version"), table_name="rollouts")
    op.drop_table("rollouts")
    op.drop_table("releases")
