"""Agent configs pushed by the hub (issue 15).

* ``gateway_configs``: one row per version of a gateway's agent.toml the hub pushed: the text and its SHA-256, the
  probation asked for, who pushed it when, the ``config.apply`` command that carries it, and what the gateway
  made of it (status, its detail, when). Unique on (store, gateway, version) and on the command.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create gateway_configs."""
    op.create_table(
        "gateway_configs",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("store_id", sa.String(63), nullable=False),
        sa.Column("gateway_id", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("toml", sa.Text(), nullable=False),
        sa.Column("toml_sha256", sa.String(64), nullable=False),
        sa.Column("probation_s", sa.Float(), nullable=False),
        sa.Column("pushed_by", sa.String(128), nullable=False),
        sa.Column("pushed_at", UTC_TS, nullable=False),
        sa.Column("command_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("result_at", UTC_TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["store_id", "gateway_id"],
            ["gateways.store_id", "gateways.gateway_id"],
            name="fk_gateway_configs_store_id_gateways",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_gateway_configs"),
        sa.UniqueConstraint("command_id", name="uq_gateway_configs_command_id"),
        sa.UniqueConstraint(
            "store_id", "gateway_id", "version", name="uq_gateway_configs_store_id_gateway_id_version"
        ),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    """Drop gateway_configs."""
    op.drop_table("gateway_configs")
