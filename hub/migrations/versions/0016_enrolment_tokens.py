"""Enrolment by one-time token, and each gateway's certificate expiry (issue 15).

* ``enrolment_tokens``: one row per token an admin or technician made for a store's gateway; only the SHA-256 of
  its secret is kept. Used once (``used_at``), revocable, expiring.
* ``gateways.certificate_expires_at``: the not-after of the newest certificate the hub signed for the gateway, so
  the fleet shows a certificate about to expire.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create enrolment_tokens; add gateways.certificate_expires_at."""
    op.create_table(
        "enrolment_tokens",
        sa.Column("token_id", sa.String(16), nullable=False),
        sa.Column("secret_digest", sa.String(64), nullable=False),
        sa.Column("store_id", sa.String(63), nullable=False),
        sa.Column("gateway_id", sa.String(63), nullable=False),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("expires_at", UTC_TS, nullable=False),
        sa.Column("used_at", UTC_TS, nullable=True),
        sa.Column("used_from", sa.String(64), nullable=True),
        sa.Column("certificate_serial", sa.String(40), nullable=True),
        sa.Column("revoked_at", UTC_TS, nullable=True),
        sa.Column("revoked_by", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("token_id", name="pk_enrolment_tokens"),
    )
    op.create_index("ix_enrolment_tokens_store_created", "enrolment_tokens", ["store_id", "created_at"])
    # A plain ADD COLUMN: SQLite adds a nullable column without copying the table.
    op.add_column("gateways", sa.Column("certificate_expires_at", UTC_TS, nullable=True))


def downgrade() -> None:
    """Drop them again."""
    # A plain DROP COLUMN (SQLite 3.35+): a batch copy would drop and re-create gateways, which the rows of every
    # table that refers to it forbid.
    op.drop_column("gateways", "certificate_expires_at")
    op.drop_index("ix_enrolment_tokens_store_created", table_name="enrolment_tokens")
    op.drop_table("enrolment_tokens")
