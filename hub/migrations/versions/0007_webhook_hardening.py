"""Webhook secrets sealed at rest, delivery timing instead of the receiver's words.

* ``webhooks.secret`` (plain text) becomes ``legacy_secret`` and ``secret_sealed`` holds the secret
  encrypted with the hub's key (Fernet). The key lives in the hub's secrets directory, which a migration
  does not know, so the hub seals the legacy secrets when it starts
  (:func:`hub.alerting.secret_box.seal_stored_secrets`) and empties ``legacy_secret`` ("").
* ``webhook_deliveries`` records when the last attempt started and how long it took; the excerpts of
  receivers' answers kept in ``last_error`` ("HTTP 500: <page>") are cut back to the status.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Add the sealed secret and the timing columns; keep every webhook; drop stored response excerpts."""
    # Native ALTERs on both databases (SQLite 3.25+ renames, 3.35+ drops columns): a batch rebuild of
    # webhooks would drop a table webhook_deliveries references, which SQLite's foreign keys refuse.
    # So legacy_secret keeps its NOT NULL and holds "" once its secret is sealed.
    op.execute("ALTER TABLE webhooks RENAME COLUMN secret TO legacy_secret")
    op.add_column("webhooks", sa.Column("secret_sealed", sa.Text(), nullable=True))
    op.add_column("webhook_deliveries", sa.Column("last_attempt_at", UTC_TS, nullable=True))
    op.add_column("webhook_deliveries", sa.Column("last_duration_ms", sa.Integer(), nullable=True))
    deliveries = sa.table(
        "webhook_deliveries", sa.column("last_error", sa.Text()), sa.column("last_status_code", sa.Integer())
    )
    op.execute(
        deliveries.update()
        .where(deliveries.c.last_status_code.is_not(None), deliveries.c.last_error.like("HTTP %:%"))
        .values(last_error=sa.literal("HTTP ") + sa.cast(deliveries.c.last_status_code, sa.String(8)))
    )


def downgrade() -> None:
    """Back to plain-text secrets; refused while a secret exists only sealed (the key is not known here)."""
    webhooks = sa.table("webhooks", sa.column("legacy_secret", sa.String()))
    sealed_only = op.get_bind().execute(
        sa.select(sa.func.count()).select_from(webhooks).where(webhooks.c.legacy_secret == "")
    )
    if sealed_only.scalar_one():
        raise RuntimeError("webhook secrets are sealed with the hub's key; delete those webhooks before downgrading")
    op.execute("ALTER TABLE webhook_deliveries DROP COLUMN last_duration_ms")
    op.execute("ALTER TABLE webhook_deliveries DROP COLUMN last_attempt_at")
    op.execute("ALTER TABLE webhooks DROP COLUMN secret_sealed")
    op.execute("ALTER TABLE webhooks RENAME COLUMN legacy_secret TO secret")
